//! Network-namespace lab: an underlay namespace holding a Linux bridge, one namespace per host
//! attached to it with a veth pair, and guaranteed teardown.
//!
//! This is a shell crate: it drives `ip` (iproute2) and `ip netns exec`, and needs root.
//!
//! Every namespace a [`Lab`] makes is named `cvlab-<pid>-<n>-…`, so labs of parallel tests (and
//! of parallel test processes) never collide, and a later run can tell the leftovers of a dead
//! process from a live lab ([`sweep_stale`]). Dropping the `Lab` — also while unwinding from a
//! panic — kills every process still running in its namespaces, deletes them and removes its
//! scratch directory; when the drop happens during a panic, the tail of every process log is
//! printed first, because that is what one needs to see why a test failed.
//!
//! Hosts get `10.250.0.<i>/24` and `fd00:250::<i>/64` on `eth0`, `i` counting from 1. Each
//! lab has its own bridge in its own namespace, so the same addresses in two labs never meet.

use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub mod cvlan;
pub mod gateway;

/// Every namespace the lab makes starts with this; `hw-lab/lab.sh down` removes them all.
pub const PREFIX: &str = "cvlab-";

/// Most hosts one lab holds (the last octet of the underlay /24, minus network and broadcast).
pub const MAX_HOSTS: usize = 250;

/// What went wrong while building, using or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started (not installed, not executable, …).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program, as given.
        program: String,
        /// Why the OS refused.
        #[source]
        source: io::Error,
    },
    /// A command ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// A file or directory of the lab could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Host names become part of namespace names.
    #[error("invalid host name {0:?}: use 1 to 20 of a-z, 0-9 and '-'")]
    InvalidName(String),
    /// Two hosts of one lab cannot share a name.
    #[error("the lab already has a host named {0:?}")]
    DuplicateName(String),
    /// The underlay /24 is used up.
    #[error("a lab holds at most {MAX_HOSTS} hosts")]
    Full,
    /// A binary of the build is not where it was looked for.
    #[error("{name} not found in {}: run `cargo build --workspace --bins` first", .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    MissingBinary {
        /// The binary's name.
        name: String,
        /// The directories searched.
        searched: Vec<PathBuf>,
    },
    /// A REST call answered with a non-2xx status.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Http {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The status code (0 when curl printed none).
        status: u16,
        /// The answer's body.
        body: String,
    },
    /// A program answered, but not as expected (the message says how).
    #[error("{0}")]
    Unexpected(String),
    /// [`wait_until`] ran out of time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
        /// What it waited for.
        what: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

static LABS: AtomicU32 = AtomicU32::new(0);

/// A set of network namespaces on one private bridge. Dropping it tears everything down.
pub struct Lab {
    shared: Arc<Shared>,
}

struct Shared {
    /// `cvlab-<pid>-<n>`: the prefix of every namespace of this lab.
    name: String,
    /// Scratch directory for logs and state (removed on drop unless `CVLAN_LAB_KEEP` is set).
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Host names in creation order; host `i` (0-based) has address index `i + 1`.
    hosts: Vec<String>,
    /// Every namespace made so far, the underlay first.
    namespaces: Vec<String>,
    /// Log files of spawned processes, for the panic dump.
    logs: Vec<PathBuf>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent (every update is a
        // single push), so a poisoned lock is still good to use — and teardown must go on.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Lab {
    /// Makes the underlay namespace with its bridge, after sweeping away the namespaces of
    /// earlier lab processes that died without cleaning up.
    ///
    /// # Errors
    /// When `ip` fails (not root, no iproute2) or the scratch directory cannot be made.
    pub fn new() -> Result<Lab> {
        // A failed sweep must not stop a new lab: the names cannot collide with a dead pid's.
        let _ = sweep_stale();
        let n = LABS.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        // A directory left by a dead process that had our pid is stale by construction.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|source| Error::Io {
            path: dir.clone(),
            source,
        })?;
        let lab = Lab {
            shared: Arc::new(Shared {
                name,
                dir,
                state: Mutex::new(State::default()),
            }),
        };
        let ul = lab.underlay();
        // Record before creating, so a half-made namespace is still deleted on drop.
        lab.shared.state().namespaces.push(ul.clone());
        ip(["netns", "add", &ul])?;
        ip(["-n", &ul, "link", "set", "lo", "up"])?;
        ip(["-n", &ul, "link", "add", "br0", "type", "bridge"])?;
        ip(["-n", &ul, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// The lab's unique name, `cvlab-<pid>-<n>`; every namespace name starts with it.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The lab's scratch directory (logs, state directories); removed on drop unless the
    /// environment variable `CVLAN_LAB_KEEP` is set.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The namespace holding the bridge `br0` that every host's veth is attached to.
    pub fn underlay(&self) -> String {
        format!("{}-ul", self.shared.name)
    }

    /// Adds a host: a namespace with loopback up and `eth0` on the bridge, addressed
    /// `10.250.0.<i>/24` and `fd00:250::<i>/64` (no duplicate address detection, so both are
    /// usable at once).
    ///
    /// # Errors
    /// On a bad or duplicate name, a full lab, or when `ip` fails.
    pub fn add_host(&self, name: &str) -> Result<Host> {
        let valid = !name.is_empty()
            && name.len() <= 20
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(Error::InvalidName(name.to_string()));
        }
        let netns = format!("{}-{name}", self.shared.name);
        let index = {
            let mut st = self.shared.state();
            if st.hosts.iter().any(|h| h == name) {
                return Err(Error::DuplicateName(name.to_string()));
            }
            if st.hosts.len() >= MAX_HOSTS {
                return Err(Error::Full);
            }
            st.hosts.push(name.to_string());
            st.namespaces.push(netns.clone());
            st.hosts.len()
        };
        let index_u8 = u8::try_from(index).map_err(|_| Error::Full)?;
        let host = Host {
            shared: Arc::clone(&self.shared),
            name: name.to_string(),
            netns,
            ipv4: Ipv4Addr::new(10, 250, 0, index_u8),
            ipv6: Ipv6Addr::new(0xfd00, 0x250, 0, 0, 0, 0, 0, u16::from(index_u8)),
        };
        let ul = self.underlay();
        let ns = &host.netns;
        // Link names are per namespace, so short fixed names cannot collide across labs.
        let port = format!("h{index}");
        ip(["netns", "add", ns])?;
        ip(["-n", ns, "link", "set", "lo", "up"])?;
        ip([
            "-n", &ul, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ])?;
        ip(["-n", &ul, "link", "set", &port, "master", "br0", "up"])?;
        ip([
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/24", host.ipv4),
            "dev",
            "eth0",
        ])?;
        ip([
            "-n",
            ns,
            "addr",
            "add",
            &format!("{}/64", host.ipv6),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(["-n", ns, "link", "set", "eth0", "up"])?;
        fs::create_dir_all(host.dir()).map_err(|source| Error::Io {
            path: host.dir(),
            source,
        })?;
        Ok(host)
    }

    /// Connects two hosts with a point-to-point veth pair (`a_if` in `a`, `b_if` in `b`), both
    /// ends up and without addresses — for topologies beside the shared bridge, such as a
    /// gateway's data ports. IPv6 is disabled on both ends so that no router solicitations or
    /// duplicate-address probes show up on a port a packet framework owns. The pair goes away
    /// with the namespaces.
    ///
    /// # Errors
    /// When `ip` or `sysctl` fails (names longer than 15 bytes, a name already used, …).
    pub fn link(&self, a: &Host, a_if: &str, b: &Host, b_if: &str) -> Result<()> {
        ip([
            "-n", &a.netns, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns",
            &b.netns,
        ])?;
        for (h, ifname) in [(a, a_if), (b, b_if)] {
            h.run_ok([
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv6.conf.{ifname}.disable_ipv6=1"),
            ])?;
            ip(["-n", &h.netns, "link", "set", ifname, "up"])?;
        }
        Ok(())
    }

    /// Every namespace of this lab, the underlay first.
    pub fn namespaces(&self) -> Vec<String> {
        self.shared.state().namespaces.clone()
    }
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("name", &self.shared.name)
            .field("dir", &self.shared.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let (namespaces, logs) = {
            let st = self.shared.state();
            (st.namespaces.clone(), st.logs.clone())
        };
        if std::thread::panicking() {
            dump_logs(&logs);
        }
        // Hosts first, the underlay last: killing the processes first matters, because a
        // namespace that a process still holds outlives `ip netns del`.
        for ns in namespaces.iter().rev() {
            kill_namespace_processes(ns);
        }
        for ns in namespaces.iter().rev() {
            let _ = ip(["netns", "del", ns]);
        }
        if std::env::var_os("CVLAN_LAB_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.shared.dir);
        }
    }
}

/// One host of a [`Lab`]: a network namespace with an address on the underlay.
#[derive(Clone)]
pub struct Host {
    shared: Arc<Shared>,
    name: String,
    netns: String,
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Host")
            .field("name", &self.name)
            .field("netns", &self.netns)
            .field("ipv4", &self.ipv4)
            .field("ipv6", &self.ipv6)
            .finish()
    }
}

static PROCS: AtomicU32 = AtomicU32::new(0);

impl Host {
    /// The host's name within the lab.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network namespace's name (usable with `ip netns exec`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The underlay IPv4 address on `eth0`.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// The underlay IPv6 address on `eth0`.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.ipv6
    }

    /// The underlay address of the given family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.ipv6)
        } else {
            IpAddr::V4(self.ipv4)
        }
    }

    /// This host's own scratch directory inside the lab's (exists once the host does).
    pub fn dir(&self) -> PathBuf {
        self.shared.dir.join(&self.name)
    }

    /// A `Command` that runs `program` inside this host's namespace (`ip netns exec`), for
    /// callers that want to set the environment or stdio themselves.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns]).arg(program);
        c
    }

    /// Runs a command in the namespace to completion and returns its output, whatever its
    /// exit status.
    ///
    /// # Errors
    /// Only when it cannot be started.
    pub fn run<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, line) = self.build(args);
        cmd.stdin(Stdio::null());
        cmd.output().map_err(|source| Error::Spawn {
            program: line,
            source,
        })
    }

    /// Runs a command in the namespace and returns its stdout.
    ///
    /// # Errors
    /// When it cannot be started or exits unsuccessfully ([`Error::Failed`] carries stderr).
    pub fn run_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut cmd, line) = self.build(args);
        cmd.stdin(Stdio::null());
        let out = cmd.output().map_err(|source| Error::Spawn {
            program: line.clone(),
            source,
        })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(Error::Failed {
                command: line,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// Starts a long-running command in the namespace, its stdout and stderr going to a log
    /// file in the host's directory ([`Proc::log`]). The process is killed when the `Proc` is
    /// dropped, and in any case when the lab is.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn spawn<I, S>(&self, args: I) -> Result<Proc>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (cmd, line) = self.build(args);
        self.spawn_command(cmd, &line)
    }

    /// Like [`Host::spawn`] for a `Command` made with [`Host::command`]; `label` names the log.
    ///
    /// # Errors
    /// When the log cannot be created or the command cannot be started.
    pub fn spawn_command(&self, mut cmd: Command, label: &str) -> Result<Proc> {
        let n = PROCS.fetch_add(1, Ordering::Relaxed);
        let stem: String = label
            .split_whitespace()
            .find(|w| !["ip", "netns", "exec", &self.netns].contains(w))
            .unwrap_or("proc")
            .rsplit('/')
            .next()
            .unwrap_or("proc")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let log = self.dir().join(format!("{stem}-{n}.log"));
        let out = File::create(&log).map_err(|source| Error::Io {
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| Error::Io {
            path: log.clone(),
            source,
        })?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            program: label.to_string(),
            source,
        })?;
        self.shared.state().logs.push(log.clone());
        Ok(Proc {
            child: Some(child),
            label: format!("{}: {label}", self.name),
            log,
        })
    }

    /// Runs `f` on a fresh thread that has joined this host's network namespace, and returns
    /// its result. Sockets made inside `f` belong to the namespace for their whole life, even
    /// once handed back to other threads.
    ///
    /// # Errors
    /// When the namespace cannot be joined.
    ///
    /// # Panics
    /// Re-raises a panic of `f`.
    pub fn enter<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let path = PathBuf::from("/run/netns").join(&self.netns);
        let handle = std::thread::spawn(move || -> Result<T> {
            let file = File::open(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            // SAFETY: setns only reads the descriptor, which `file` keeps open for the call;
            // it changes the namespace of this (fresh, single-purpose) thread only.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(Error::Io {
                    path,
                    source: io::Error::last_os_error(),
                });
            }
            Ok(f())
        });
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    fn build<I, S>(&self, args: I) -> (Command, String)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]);
        let mut words = Vec::new();
        for a in args {
            words.push(a.as_ref().to_string_lossy().into_owned());
            cmd.arg(a);
        }
        // The line ends up in error messages: no secrets in it.
        let line = format!(
            "ip netns exec {} {}",
            self.netns,
            cvlan::redact(&words).join(" ")
        );
        (cmd, line)
    }
}

/// A process started with [`Host::spawn`]; killed when dropped.
pub struct Proc {
    child: Option<Child>,
    label: String,
    log: PathBuf,
}

impl fmt::Debug for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proc")
            .field("label", &self.label)
            .field("pid", &self.pid())
            .finish()
    }
}

impl Proc {
    /// The process id (of the command itself: `ip netns exec` execs it in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where its stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything it printed so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// `Some(status)` once it has exited.
    ///
    /// # Errors
    /// When waiting fails.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        match self.child.as_mut() {
            None => Ok(None),
            Some(c) => c.try_wait().map_err(|source| Error::Io {
                path: self.log.clone(),
                source,
            }),
        }
    }

    /// Waits up to `timeout` for it to exit by itself.
    ///
    /// # Errors
    /// [`Error::Timeout`] when it is still running then (it is left running).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let label = self.label.clone();
        wait_until(timeout, &format!("{label} to exit"), || {
            self.try_wait().ok().flatten()
        })
    }

    /// Asks it to stop (SIGTERM), then kills it (SIGKILL) if it has not exited within
    /// `grace`; returns how it ended.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: the pid is our own unreaped child, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_millis(500));
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
///
/// # Errors
/// [`Error::Timeout`] naming `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                waited: start.elapsed(),
                what: what.to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every network namespace whose name starts with [`PREFIX`].
///
/// # Errors
/// When `ip netns list` fails.
pub fn lab_namespaces() -> Result<Vec<String>> {
    let out = ip(["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(PREFIX))
        .map(str::to_string)
        .collect())
}

/// Deletes lab namespaces (killing their processes) left by lab processes that no longer
/// run — names `cvlab-<pid>-…` whose pid is gone — and returns their names. Live labs, and
/// namespaces named otherwise (such as `hw-lab/lab.sh`'s), are left alone.
///
/// # Errors
/// When `ip netns list` fails.
pub fn sweep_stale() -> Result<Vec<String>> {
    let stale: Vec<String> = lab_namespaces()?
        .into_iter()
        .filter(|n| owner_pid(n).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect();
    delete_namespaces(&stale);
    Ok(stale)
}

/// Deletes every lab namespace, live or not (killing their processes): `lab.sh down`'s job,
/// for when nothing else should be running.
///
/// # Errors
/// When `ip netns list` fails.
pub fn sweep_all() -> Result<Vec<String>> {
    let all = lab_namespaces()?;
    delete_namespaces(&all);
    Ok(all)
}

/// The pid in `cvlab-<pid>-…`, if the name has that shape.
fn owner_pid(netns: &str) -> Option<u32> {
    netns.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

fn delete_namespaces(names: &[String]) {
    for ns in names {
        kill_namespace_processes(ns);
    }
    for ns in names {
        let _ = ip(["netns", "del", ns]);
    }
}

/// SIGTERM to every process in the namespace, then SIGKILL to whatever is left after 1 s.
fn kill_namespace_processes(netns: &str) {
    let pids = |ns: &str| -> Vec<libc::pid_t> {
        ip(["netns", "pids", ns])
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left = pids(netns);
    if left.is_empty() {
        return;
    }
    for &p in &left {
        // SAFETY: plain signal delivery; a pid that has exited meanwhile just yields ESRCH.
        unsafe { libc::kill(p, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        left = pids(netns);
    }
    for &p in &left {
        // SAFETY: as above.
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    // Let the kernel finish the exits, so `ip netns del` really frees the namespace.
    let _ = wait_until(
        Duration::from_secs(2),
        "namespace processes to exit",
        || pids(netns).is_empty().then_some(()),
    );
}

/// Prints the last lines of each log: what a failing test needs to show.
fn dump_logs(logs: &[PathBuf]) {
    const TAIL: u64 = 4000;
    for log in logs {
        let Ok(mut f) = File::open(log) else { continue };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(TAIL)));
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        eprintln!("---- {} (last {TAIL} bytes) ----\n{s}", log.display());
    }
}

/// Runs `ip ARGS` in the current (root) namespace; stdout on success.
fn ip<const N: usize>(args: [&str; N]) -> Result<String> {
    let line = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            program: "ip".to_string(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            command: line,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use std::io::Write;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn exists(ns: &str) -> bool {
        lab_namespaces().unwrap().iter().any(|n| n == ns)
    }

    fn pid_alive(pid: u32) -> bool {
        // A zombie still has /proc/<pid>; only count processes that can still run.
        fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let state = s.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z')
            })
            .unwrap_or(false)
    }

    #[test]
    fn two_hosts_ping_each_other_over_the_bridge_on_both_families() {
        let lab = Lab::new().unwrap();
        let a = lab.add_host("a").unwrap();
        let b = lab.add_host("b").unwrap();
        assert_eq!(a.ipv4(), Ipv4Addr::new(10, 250, 0, 1));
        assert_eq!(b.ipv6(), "fd00:250::2".parse::<Ipv6Addr>().unwrap());
        a.run_ok(["ping", "-c1", "-W2", &b.ipv4().to_string()])
            .unwrap();
        b.run_ok(["ping", "-c1", "-W2", &a.ipv6().to_string()])
            .unwrap();
    }

    #[test]
    fn hosts_are_isolated_from_the_root_namespace() {
        let lab = Lab::new().unwrap();
        let a = lab.add_host("a").unwrap();
        let links = a.run_ok(["ip", "-o", "link"]).unwrap();
        let names: Vec<&str> = links
            .lines()
            .filter_map(|l| l.split(':').nth(1))
            .map(|n| n.trim().split('@').next().unwrap_or(""))
            .collect();
        assert_eq!(names, ["lo", "eth0"]);
    }

    #[test]
    fn a_failing_command_reports_its_status_and_stderr() {
        let lab = Lab::new().unwrap();
        let a = lab.add_host("a").unwrap();
        let out = a.run(["sh", "-c", "echo oops >&2; exit 3"]).unwrap();
        assert_eq!(out.status.code(), Some(3));
        let err = a.run_ok(["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert!(
            matches!(&err, Error::Failed { stderr, .. } if stderr == "oops"),
            "{err}"
        );
    }

    #[test]
    fn dropping_the_lab_kills_its_processes_and_deletes_every_namespace() {
        let lab = Lab::new().unwrap();
        let a = lab.add_host("a").unwrap();
        let _b = lab.add_host("b").unwrap();
        let namespaces = lab.namespaces();
        assert_eq!(namespaces.len(), 3);
        assert!(namespaces.iter().all(|n| exists(n)));
        let p = a.spawn(["sleep", "1000"]).unwrap();
        // A daemon that detached from us must die too.
        a.run_ok([
            "sh",
            "-c",
            "setsid sleep 1001 >/dev/null 2>&1 < /dev/null &",
        ])
        .unwrap();
        let detached: u32 = wait_until(Duration::from_secs(5), "detached sleep", || {
            ip(["netns", "pids", a.netns()])
                .ok()?
                .split_whitespace()
                .filter_map(|s| s.parse::<u32>().ok())
                .find(|&pid| Some(pid) != p.pid())
        })
        .unwrap();
        let pid = p.pid().unwrap();
        let dir = lab.dir().to_path_buf();
        assert!(dir.exists());
        std::mem::forget(p); // only the lab is left to clean up
        drop(lab);
        for ns in &namespaces {
            assert!(!exists(ns), "{ns} survived");
        }
        assert!(!dir.exists());
        wait_until(Duration::from_secs(5), "processes to die", || {
            (!pid_alive(pid) && !pid_alive(detached)).then_some(())
        })
        .unwrap();
    }

    #[test]
    fn teardown_happens_even_when_the_test_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let r = std::panic::catch_unwind(move || {
            let lab = Lab::new().unwrap();
            let a = lab.add_host("a").unwrap();
            let _p = a.spawn(["sh", "-c", "echo started; sleep 1000"]).unwrap();
            tx.send(lab.namespaces()).unwrap();
            panic!("deliberate");
        });
        assert!(r.is_err());
        for ns in rx.recv().unwrap() {
            assert!(!exists(&ns), "{ns} survived the panic");
        }
    }

    #[test]
    fn parallel_labs_with_the_same_host_names_do_not_collide() {
        let l1 = Lab::new().unwrap();
        let l2 = Lab::new().unwrap();
        assert_ne!(l1.name(), l2.name());
        let a1 = l1.add_host("a").unwrap();
        let b1 = l1.add_host("b").unwrap();
        let a2 = l2.add_host("a").unwrap();
        assert_ne!(a1.netns(), a2.netns());
        assert_eq!(a1.ipv4(), a2.ipv4());
        a1.run_ok(["ping", "-c1", "-W2", &b1.ipv4().to_string()])
            .unwrap();
        // l2 has no host .2: its bridge is a different wire.
        let out = a2
            .run(["ping", "-c1", "-W1", &b1.ipv4().to_string()])
            .unwrap();
        assert!(!out.status.success());
    }

    #[test]
    fn bad_and_duplicate_host_names_are_refused() {
        let lab = Lab::new().unwrap();
        assert!(matches!(lab.add_host("A b"), Err(Error::InvalidName(_))));
        assert!(matches!(lab.add_host(""), Err(Error::InvalidName(_))));
        lab.add_host("a").unwrap();
        assert!(matches!(lab.add_host("a"), Err(Error::DuplicateName(_))));
    }

    #[test]
    fn sweep_removes_namespaces_of_dead_processes_only() {
        let lab = Lab::new().unwrap();
        // A pid that surely is not running: one of ours that has exited and been reaped.
        let mut c = Command::new("true").spawn().unwrap();
        let dead = c.id();
        c.wait().unwrap();
        let stale = format!("{PREFIX}{dead}-0-x");
        ip(["netns", "add", &stale]).unwrap();
        let swept = sweep_stale().unwrap();
        assert!(swept.contains(&stale), "{swept:?}");
        assert!(!exists(&stale));
        for ns in lab.namespaces() {
            assert!(exists(&ns), "live {ns} was swept");
        }
    }

    #[test]
    fn enter_runs_code_inside_the_namespace() {
        let lab = Lab::new().unwrap();
        let a = lab.add_host("a").unwrap();
        let b = lab.add_host("b").unwrap();
        let addr = SocketAddr::new(a.addr(false), 7000);
        // The address exists only in a's namespace, so binding proves where the thread ran.
        assert!(TcpListener::bind(addr).is_err());
        let listener = a.enter(move || TcpListener::bind(addr)).unwrap().unwrap();
        b.enter(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"hello").unwrap();
        })
        .unwrap();
        let (mut s, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), b.addr(false));
        let mut buf = String::new();
        s.read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "hello");
    }

    #[test]
    fn spawned_output_goes_to_the_log() {
        let lab = Lab::new().unwrap();
        let a = lab.add_host("a").unwrap();
        let mut p = a.spawn(["sh", "-c", "echo out; echo err >&2"]).unwrap();
        let st = p.wait_timeout(Duration::from_secs(5)).unwrap();
        assert!(st.success());
        let log = p.log();
        assert!(log.contains("out") && log.contains("err"), "{log}");
    }
}
