//! Drives a CloudVLAN gateway inside a [`Lab`](crate::Lab) host: `vrouter-dpdk` (DPDK on
//! af_packet ports, the fast path) and `vrouterd` (the sidecar that writes the tables and runs
//! the WireGuard handshakes) beside it, and `vrouterctl` to look at both.
//!
//! The gateway has one underlay address (the WireGuard endpoint nodes are given) that no
//! kernel interface carries: the DPDK ports own their links, so the kernel of the gateway's
//! namespace never sees the data traffic.

use std::ffi::OsStr;
use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::cvlan::{Secret, find_binary};
use crate::{Error, Host, Lab, Proc, Result, wait_until};

/// The gateway binaries of a build: `vrouterd`, `vrouterctl`, `vrouter-dpdk`.
#[derive(Clone, Debug)]
pub struct GatewayBinaries {
    /// `vrouterd`.
    pub vrouterd: PathBuf,
    /// `vrouterctl`.
    pub vrouterctl: PathBuf,
    /// `vrouter-dpdk`.
    pub dpdk: PathBuf,
}

impl GatewayBinaries {
    /// Finds the three like [`crate::cvlan::Binaries::find`].
    ///
    /// # Errors
    /// [`Error::MissingBinary`] naming the first one not found.
    pub fn find(dir: Option<&Path>) -> Result<GatewayBinaries> {
        Ok(GatewayBinaries {
            vrouterd: find_binary("vrouterd", dir)?,
            vrouterctl: find_binary("vrouterctl", dir)?,
            dpdk: find_binary("vrouter-dpdk", dir)?,
        })
    }
}

/// One DPDK port of the gateway: a link of the host and the address the gateway answers ARP
/// for on it (`10.251.1.1/24`).
#[derive(Clone, Debug)]
pub struct Port {
    /// Interface name in the gateway's namespace.
    pub iface: String,
    /// Address with prefix length.
    pub addr: String,
}

impl Port {
    /// Ports `p0`…`p<n-1>` answering as `10.251.<i+1>.1/24`: one point-to-point link per
    /// agent host (see [`link_agent`]).
    pub fn lab_ports(n: usize) -> Vec<Port> {
        (0..n)
            .map(|i| Port {
                iface: format!("p{i}"),
                addr: format!("10.251.{}.1/24", i + 1),
            })
            .collect()
    }
}

/// Links `host` to the gateway's port `p<index>` (from [`Port::lab_ports`]): `gw0` in the host
/// gets `10.251.<index+1>.2/24` and a route to the gateway's underlay address over it, with
/// the offloads turned off that would hand af_packet unsegmented UDP super-packets and partial
/// checksums across the veth.
///
/// # Errors
/// When `ip`, `sysctl` or `ethtool` fails.
pub fn link_agent(lab: &Lab, gw: &Gateway, host: &Host, index: usize) -> Result<()> {
    lab.link(gw.host(), &format!("p{index}"), host, "gw0")?;
    let net = index + 1;
    let under = gw.underlay().ip().to_string();
    let via = format!("10.251.{net}.1");
    host.run_ok([
        "ip",
        "addr",
        "add",
        &format!("10.251.{net}.2/24"),
        "dev",
        "gw0",
    ])?;
    host.run_ok(["ip", "route", "add", &under, "via", &via])?;
    host.run_ok([
        "ethtool", "-K", "gw0", "tx", "off", "gso", "off", "tso", "off",
    ])?;
    Ok(())
}

/// Leaves `host` only `keep` (the control plane) on the lab bridge: blackhole routes for the
/// rest of 10.250.0.0/24 and no IPv6 on `eth0`, so it cannot reach the other hosts directly.
///
/// # Errors
/// When `ip` or `sysctl` fails.
pub fn isolate_on_bridge(host: &Host, keep: std::net::Ipv4Addr) -> Result<()> {
    host.run_ok(["ip", "route", "add", "blackhole", "10.250.0.0/25"])?;
    host.run_ok(["ip", "route", "add", "blackhole", "10.250.0.128/25"])?;
    host.run_ok(["ip", "route", "add", &format!("{keep}/32"), "dev", "eth0"])?;
    host.run_ok(["sysctl", "-q", "-w", "net.ipv6.conf.eth0.disable_ipv6=1"])?;
    Ok(())
}

/// A gateway in one lab host. Dropping it stops both daemons and removes the table segment.
pub struct Gateway {
    host: Host,
    bins: GatewayBinaries,
    underlay: SocketAddr,
    ports: Vec<Port>,
    segment: PathBuf,
    dpdk: Option<Proc>,
    sidecar: Option<Proc>,
    server: Option<String>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("host", &self.host.name())
            .field("underlay", &self.underlay)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway in `host` with WireGuard endpoint `underlay` and these ports; nothing runs yet.
    pub fn new(
        host: &Host,
        bins: &GatewayBinaries,
        underlay: SocketAddr,
        ports: Vec<Port>,
    ) -> Self {
        Gateway {
            host: host.clone(),
            bins: bins.clone(),
            underlay,
            ports,
            // tmpfs, like a real deployment's /dev/shm/cvlan-tables; unique per lab host.
            segment: PathBuf::from(format!("/dev/shm/{}-tables", host.netns())),
            dpdk: None,
            sidecar: None,
            server: None,
        }
    }

    /// The WireGuard endpoint of the gateway.
    pub fn underlay(&self) -> SocketAddr {
        self.underlay
    }

    /// The host it runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Path of the shared-memory table segment.
    pub fn segment(&self) -> &Path {
        &self.segment
    }

    fn sock(&self, name: &str) -> PathBuf {
        self.host.dir().join(name)
    }

    /// vrouterd's control socket (what `vrouterctl` talks to).
    pub fn control_socket(&self) -> PathBuf {
        self.sock("vrouterd.sock")
    }

    /// Starts `vrouter-dpdk` on the ports and waits until its socket is bound.
    ///
    /// # Errors
    /// When it cannot be started or exits, or its socket does not appear within 30 s.
    pub fn start_dataplane(&mut self) -> Result<()> {
        let dpdk_sock = self.sock("vrouter-dpdk.sock");
        let _ = std::fs::remove_file(&dpdk_sock);
        let mut args: Vec<String> = vec![
            self.bins.dpdk.to_string_lossy().into_owned(),
            "--segment".into(),
            self.segment.to_string_lossy().into_owned(),
            "--underlay".into(),
            self.underlay.ip().to_string(),
            "--socket".into(),
            dpdk_sock.to_string_lossy().into_owned(),
            "--sidecar-socket".into(),
            self.sock("vrouterd-punt.sock")
                .to_string_lossy()
                .into_owned(),
            "--file-prefix".into(),
            self.host.netns().to_string(),
            "--metrics-listen".into(),
            "127.0.0.1:9436".into(),
            // A polling worker would take a whole core of a small test machine from the
            // agents and the traffic tools; sleep briefly once idle instead.
            "--idle-sleep-us".into(),
            "50".into(),
        ];
        for p in &self.ports {
            args.push("--port".into());
            args.push(format!("iface={},addr={}", p.iface, p.addr));
        }
        let mut p = self.host.spawn(&args)?;
        let up = wait_until(Duration::from_secs(30), "vrouter-dpdk's socket", || {
            if dpdk_sock.exists() {
                return Some(true);
            }
            matches!(p.try_wait(), Ok(Some(_))).then_some(false)
        });
        if !matches!(up, Ok(true)) {
            return Err(Error::Unexpected(format!(
                "vrouter-dpdk in {} did not start; log:\n{}",
                self.host.name(),
                p.log()
            )));
        }
        self.dpdk = Some(p);
        Ok(())
    }

    /// Starts `vrouterd`, enrolling with `token` at `server` (the node listener URL), and
    /// waits until its control socket answers.
    ///
    /// # Errors
    /// When the token file cannot be written, vrouterd cannot be started or exits, or it does
    /// not answer within 30 s.
    pub fn start_sidecar(&mut self, server: &str, token: &Secret) -> Result<()> {
        let path = self.host.dir().join("join-token");
        // 0600: the token is a credential, like the agent's.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        std::io::Write::write_all(&mut f, token.0.as_bytes()).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        self.server = Some(server.to_string());
        self.launch_sidecar(Some(&path))
    }

    /// Stops vrouterd: SIGTERM with a grace period, or SIGKILL at once (`kill`), as a crash.
    pub fn stop_sidecar(&mut self, kill: bool) {
        if let Some(mut p) = self.sidecar.take() {
            p.stop(if kill {
                Duration::ZERO
            } else {
                Duration::from_secs(5)
            });
        }
    }

    /// Starts vrouterd again with the same state (already enrolled: no token).
    ///
    /// # Errors
    /// As [`Gateway::start_sidecar`].
    pub fn restart_sidecar(&mut self) -> Result<()> {
        self.stop_sidecar(false);
        self.launch_sidecar(None)
    }

    /// vrouterd's log so far.
    pub fn sidecar_log(&self) -> String {
        self.sidecar.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// vrouter-dpdk's log so far.
    pub fn dataplane_log(&self) -> String {
        self.dpdk.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// The `vrouter-dpdk` process (to check it keeps running).
    pub fn dataplane(&mut self) -> Option<&mut Proc> {
        self.dpdk.as_mut()
    }

    fn launch_sidecar(&mut self, token_file: Option<&Path>) -> Result<()> {
        let server = self
            .server
            .clone()
            .ok_or_else(|| Error::Unexpected("vrouterd was never started".into()))?;
        let ctl = self.control_socket();
        let _ = std::fs::remove_file(&ctl);
        let mut args: Vec<String> = vec![
            self.bins.vrouterd.to_string_lossy().into_owned(),
            "run".into(),
            "--server".into(),
            server,
            "--state-dir".into(),
            self.host
                .dir()
                .join("vrouterd")
                .to_string_lossy()
                .into_owned(),
            "--listen".into(),
            self.underlay.to_string(),
            "--segment".into(),
            self.segment.to_string_lossy().into_owned(),
            "--punt-socket".into(),
            self.sock("vrouterd-punt.sock")
                .to_string_lossy()
                .into_owned(),
            "--dpdk-socket".into(),
            self.sock("vrouter-dpdk.sock")
                .to_string_lossy()
                .into_owned(),
            "--control-socket".into(),
            ctl.to_string_lossy().into_owned(),
            "--metrics-listen".into(),
            "127.0.0.1:9435".into(),
        ];
        if let Some(t) = token_file {
            args.push("--join-token-file".into());
            args.push(t.to_string_lossy().into_owned());
        }
        let mut p = self.host.spawn(&args)?;
        let up = wait_until(Duration::from_secs(30), "vrouterd's control socket", || {
            if ctl.exists() {
                return Some(true);
            }
            matches!(p.try_wait(), Ok(Some(_))).then_some(false)
        });
        if !matches!(up, Ok(true)) {
            return Err(Error::Unexpected(format!(
                "vrouterd in {} did not start; log:\n{}",
                self.host.name(),
                p.log()
            )));
        }
        self.sidecar = Some(p);
        Ok(())
    }

    /// `vrouterctl --socket S --json ARGS`, parsed.
    ///
    /// # Errors
    /// When it fails (with its stderr) or does not print JSON.
    pub fn ctl<I, S>(&self, args: I) -> Result<Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.host.command(&self.bins.vrouterctl);
        c.arg("--socket")
            .arg(self.control_socket())
            .arg("--json")
            .args(args);
        let out = c.output().map_err(|source| Error::Spawn {
            program: "vrouterctl".into(),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(Error::Unexpected(format!(
                "vrouterctl failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        serde_json::from_str(&stdout)
            .map_err(|e| Error::Unexpected(format!("vrouterctl: not JSON ({e}): {stdout}")))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_sidecar(false);
        if let Some(mut p) = self.dpdk.take() {
            p.stop(Duration::from_secs(5));
        }
        let _ = std::fs::remove_file(&self.segment);
    }
}
