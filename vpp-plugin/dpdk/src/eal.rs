//! EAL bring-up and port setup: the only place that turns configuration into DPDK calls
//! outside the worker loop.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int};

use anyhow::{Context, Result, bail};

use crate::config::Config;
use crate::dpdk;

/// Descriptors per rx/tx queue.
const RX_DESC: u16 = 1024;
const TX_DESC: u16 = 1024;
/// Largest pool the machines here allow without hugepages (see the issue notes).
const MAX_MBUFS: u32 = 32 * 1024 - 1;
const MBUF_CACHE: u32 = 256;

/// The text of the last DPDK error.
pub fn last_error() -> String {
    // SAFETY: both read thread-local/static DPDK state; rte_strerror returns a static string.
    unsafe {
        let e = dpdk::cvd_errno();
        CStr::from_ptr(dpdk::rte_strerror(e))
            .to_string_lossy()
            .into_owned()
    }
}

/// CPUs this process may run on (the affinity mask), in order.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// The EAL argument vector for `cfg`.
///
/// # Errors
/// When more workers are asked for than CPUs are available and no lcore list is given.
pub fn eal_argv(cfg: &Config) -> Result<Vec<String>> {
    let mut a = vec![
        "vrouter-dpdk".to_owned(),
        "--no-huge".into(),
        "-m".into(),
        "512".into(),
        "--no-pci".into(),
        "--no-telemetry".into(),
        "--file-prefix".into(),
        cfg.file_prefix.clone(),
    ];
    let user_lcores = cfg
        .eal_args
        .iter()
        .any(|x| x == "-l" || x == "-c" || x.starts_with("--lcores") || x.starts_with("-l"));
    if !user_lcores {
        let cpus = allowed_cpus();
        let n = usize::from(cfg.workers);
        if n > cpus.len() {
            bail!(
                "--workers {n} exceeds the {} CPU(s) this process may use; lower --workers or \
                 pass an explicit lcore map with --eal-args \"--lcores ...\"",
                cpus.len()
            );
        }
        let list: Vec<String> = cpus[..n].iter().map(ToString::to_string).collect();
        a.push("-l".into());
        a.push(list.join(","));
    }
    for (i, p) in cfg.ports.iter().enumerate() {
        a.push(format!(
            "--vdev=net_af_packet{i},iface={},qpairs={}",
            p.iface, cfg.workers
        ));
    }
    a.extend(cfg.eal_args.iter().cloned());
    Ok(a)
}

/// Runs `rte_eal_init`.
///
/// # Errors
/// When the EAL refuses the arguments or cannot start.
pub fn init(argv: &[String]) -> Result<()> {
    let owned: Vec<CString> = argv
        .iter()
        .map(|s| CString::new(s.as_str()))
        .collect::<Result<_, _>>()
        .context("EAL argument with a NUL byte")?;
    let mut ptrs: Vec<*mut c_char> = owned.iter().map(|c| c.as_ptr().cast_mut()).collect();
    ptrs.push(std::ptr::null_mut());
    // SAFETY: argv is a NULL-terminated array of NUL-terminated strings that outlive the call
    // (`owned` is leaked below because the EAL may keep pointers into it).
    let r = unsafe { dpdk::rte_eal_init((ptrs.len() - 1) as c_int, ptrs.as_mut_ptr()) };
    std::mem::forget(owned);
    std::mem::forget(ptrs);
    if r < 0 {
        bail!("rte_eal_init failed: {}", last_error());
    }
    Ok(())
}

/// The packet-buffer pool.
pub struct Pool(pub *mut dpdk::rte_mempool);

// SAFETY: DPDK mempools are multi-producer/multi-consumer safe.
unsafe impl Send for Pool {}
// SAFETY: as above.
unsafe impl Sync for Pool {}

/// Creates the mbuf pool sized for the ports and workers (at most 32k mbufs).
///
/// # Errors
/// When DPDK cannot allocate it.
pub fn create_pool(ports: usize, workers: u16) -> Result<Pool> {
    let want = (ports as u32) * u32::from(workers) * (u32::from(RX_DESC) + u32::from(TX_DESC))
        + u32::from(workers) * (1024 + MBUF_CACHE)
        + 1024;
    let n = want.clamp(4095, MAX_MBUFS);
    let name = CString::new("cvd_pool").context("pool name")?;
    // SAFETY: valid name; sizes are plain values; the socket id comes from the EAL.
    let p = unsafe {
        dpdk::rte_pktmbuf_pool_create(
            name.as_ptr(),
            n,
            MBUF_CACHE,
            0,
            dpdk::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
            dpdk::rte_socket_id() as c_int,
        )
    };
    if p.is_null() {
        bail!("creating a pool of {n} mbufs failed: {}", last_error());
    }
    tracing::info!(
        mbufs = n,
        headroom = dpdk::RTE_PKTMBUF_HEADROOM,
        "mbuf pool ready"
    );
    Ok(Pool(p))
}

/// Sets up port `i` (`net_af_packet<i>`) with one rx/tx queue per worker and starts it.
/// Returns (port id, MAC).
///
/// # Errors
/// When the vdev is missing or DPDK refuses the configuration.
pub fn setup_port(i: usize, iface: &str, workers: u16, pool: &Pool) -> Result<(u16, [u8; 6])> {
    let name = CString::new(format!("net_af_packet{i}")).context("port name")?;
    let mut id: u16 = 0;
    // SAFETY: valid C string and out pointer.
    if unsafe { dpdk::rte_eth_dev_get_port_by_name(name.as_ptr(), &mut id) } != 0 {
        bail!(
            "port net_af_packet{i} (iface {iface}) does not exist: the af_packet PMD did not \
             probe it (does the interface exist in this network namespace?)"
        );
    }
    // SAFETY: an all-zero rte_eth_conf is DPDK's documented default configuration.
    let conf: dpdk::rte_eth_conf = unsafe { std::mem::zeroed() };
    // SAFETY: valid port id and configuration.
    let r = unsafe { dpdk::rte_eth_dev_configure(id, workers, workers, &conf) };
    if r != 0 {
        bail!("configuring port {iface} with {workers} queue pair(s): error {r}");
    }
    // SAFETY: valid port id.
    let socket = unsafe { dpdk::rte_eth_dev_socket_id(id) }.max(0) as u32;
    for q in 0..workers {
        // SAFETY: valid port/queue; null conf = defaults; the pool outlives the port.
        let r = unsafe {
            dpdk::rte_eth_rx_queue_setup(id, q, RX_DESC, socket, std::ptr::null(), pool.0)
        };
        if r != 0 {
            bail!("rx queue {q} on {iface}: error {r}");
        }
        // SAFETY: valid port/queue; null conf = defaults.
        let r = unsafe { dpdk::rte_eth_tx_queue_setup(id, q, TX_DESC, socket, std::ptr::null()) };
        if r != 0 {
            bail!("tx queue {q} on {iface}: error {r}");
        }
    }
    // SAFETY: configured port.
    let r = unsafe { dpdk::rte_eth_dev_start(id) };
    if r != 0 {
        bail!("starting port {iface}: error {r}");
    }
    // SAFETY: started port.
    unsafe { dpdk::rte_eth_promiscuous_enable(id) };
    let mut mac = dpdk::rte_ether_addr::default();
    // SAFETY: valid port and out pointer.
    unsafe { dpdk::rte_eth_macaddr_get(id, &mut mac) };
    Ok((id, mac.addr_bytes))
}

/// Port statistics.
#[must_use]
pub fn port_stats(id: u16) -> dpdk::rte_eth_stats {
    let mut s = dpdk::rte_eth_stats::default();
    // SAFETY: valid out pointer; an unknown id leaves it zeroed.
    unsafe { dpdk::rte_eth_stats_get(id, &mut s) };
    s
}

/// Stops and closes a port.
pub fn close_port(id: u16) {
    // SAFETY: stopping/closing a started port is allowed once the workers have returned.
    unsafe {
        dpdk::rte_eth_dev_stop(id);
        dpdk::rte_eth_dev_close(id);
    }
}
