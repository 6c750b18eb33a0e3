//! Drives the real CloudVLAN binaries inside a [`Lab`](crate::Lab): `cvlan-api` in one host
//! (REST on that host's loopback, the node listener on its underlay address), `cvlanctl` and
//! `curl` run in the same host against the REST API, and `cvlan-agent` + `cvlan` in others.
//!
//! Used by the end-to-end tests and by `cvlan-bench wg`; `hw-lab/lab.sh` does the same in shell.

use std::ffi::OsStr;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::{Error, Host, Proc, Result, wait_until};

/// The superadmin every lab control plane is made with.
pub const ADMIN_EMAIL: &str = "admin@cvlan.local";
/// Its password (a lab-only credential).
pub const ADMIN_PASSWORD: &str = "lab-admin-password";
/// Where the REST API listens, inside the control plane's namespace.
pub const REST: &str = "http://127.0.0.1:8080";
/// Port of the node listener on the control plane host's underlay address.
pub const NODE_PORT: u16 = 8443;

/// The binaries of a build: `cvlan-api`, `cvlanctl`, `cvlan-agent`, `cvlan`.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// `cvlan-api`.
    pub api: PathBuf,
    /// `cvlanctl`.
    pub ctl: PathBuf,
    /// `cvlan-agent`.
    pub agent: PathBuf,
    /// `cvlan`.
    pub cli: PathBuf,
}

impl Binaries {
    /// Finds all four in `dir`, or else next to the running executable (`target/debug` for a
    /// binary, its parent for a test in `target/debug/deps`).
    ///
    /// # Errors
    /// [`Error::MissingBinary`] naming the first one not found and where it looked.
    pub fn find(dir: Option<&Path>) -> Result<Binaries> {
        Ok(Binaries {
            api: find_binary("cvlan-api", dir)?,
            ctl: find_binary("cvlanctl", dir)?,
            agent: find_binary("cvlan-agent", dir)?,
            cli: find_binary("cvlan", dir)?,
        })
    }
}

/// The directories [`find_binary`] searches: `dir` if given, else `$CVLAN_BIN_DIR` if set,
/// else the running executable's directory and its parent.
pub fn search_dirs(dir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(d) = dir {
        return vec![d.to_path_buf()];
    }
    if let Some(d) = std::env::var_os("CVLAN_BIN_DIR") {
        return vec![PathBuf::from(d)];
    }
    let mut dirs = Vec::new();
    if let Ok(exe) = std::env::current_exe()
        && let Some(d) = exe.parent()
    {
        dirs.push(d.to_path_buf());
        if let Some(p) = d.parent() {
            dirs.push(p.to_path_buf());
        }
    }
    dirs
}

/// Finds one binary of the build (see [`search_dirs`]).
///
/// # Errors
/// [`Error::MissingBinary`] when it is in none of them.
pub fn find_binary(name: &str, dir: Option<&Path>) -> Result<PathBuf> {
    let searched = search_dirs(dir);
    searched
        .iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::MissingBinary {
            name: name.to_string(),
            searched,
        })
}

/// A running `cvlan-api` with a superadmin session.
pub struct ControlPlane {
    host: Host,
    bins: Binaries,
    proc: Proc,
    session: String,
}

impl fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControlPlane")
            .field("host", &self.host.name())
            .field("node_url", &self.node_url())
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    /// Creates the superadmin, starts `cvlan-api serve` on SQLite in the host's directory
    /// (REST on [`REST`], the node listener on the host's underlay address), waits until it
    /// is ready and signs in.
    ///
    /// # Errors
    /// When a step fails or the API is not ready within 30 s (its log is in the error).
    pub fn start(host: &Host, bins: &Binaries) -> Result<ControlPlane> {
        let data = host.dir().join("api");
        let data_s = data.to_string_lossy().into_owned();
        let mut c = host.command(&bins.api);
        c.args([
            "create-admin",
            "--data-dir",
            &data_s,
            "--email",
            ADMIN_EMAIL,
        ])
        .env("CVLAN_ADMIN_PASSWORD", ADMIN_PASSWORD);
        let out = c.output().map_err(|source| Error::Spawn {
            program: "cvlan-api".into(),
            source,
        })?;
        check(out, "cvlan-api create-admin")?;
        let node = format!("{}:{NODE_PORT}", host.ipv4());
        let proc = host.spawn([
            bins.api.as_os_str(),
            OsStr::new("serve"),
            OsStr::new("--data-dir"),
            data.as_os_str(),
            OsStr::new("--listen"),
            OsStr::new("127.0.0.1:8080"),
            OsStr::new("--node-listen"),
            OsStr::new(&node),
            OsStr::new("--node-tls-name"),
            OsStr::new(&host.ipv4().to_string()),
        ])?;
        let mut cp = ControlPlane {
            host: host.clone(),
            bins: bins.clone(),
            proc,
            session: String::new(),
        };
        let ready = wait_until(Duration::from_secs(30), "cvlan-api /readyz", || {
            let out = cp
                .host
                .run(["curl", "-fsS", "-m", "2", &format!("{REST}/readyz")])
                .ok()?;
            out.status.success().then_some(())
        });
        if let Err(e) = ready {
            return Err(Error::Unexpected(format!("{e}; log:\n{}", cp.proc.log())));
        }
        let login = cp.rest(
            "POST",
            "/api/v1/auth/login",
            Some(&serde_json::json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
        )?;
        cp.session = login
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Unexpected("login response has no token".into()))?
            .to_string();
        Ok(cp)
    }

    /// The URL agents use: `https://<underlay ip>:8443`.
    pub fn node_url(&self) -> String {
        format!("https://{}:{NODE_PORT}", self.host.ipv4())
    }

    /// The host it runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The `cvlan-api` process (its log, or to stop it).
    pub fn proc(&mut self) -> &mut Proc {
        &mut self.proc
    }

    /// Runs `cvlanctl -o json ARGS` as the superadmin and returns its output as it is.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn ctl_output<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.host.command(&self.bins.ctl);
        c.args(["--server", REST, "-o", "json"])
            .args(args)
            .env("CVLANCTL_TOKEN", &self.session)
            .env("CVLANCTL_CONFIG", self.host.dir().join("cvlanctl.json"));
        c.output().map_err(|source| Error::Spawn {
            program: "cvlanctl".into(),
            source,
        })
    }

    /// Runs `cvlanctl -o json ARGS` and parses what it prints (`Null` when nothing).
    ///
    /// # Errors
    /// When it fails (the error carries its stderr) or prints something that is not JSON.
    pub fn ctl<I, S>(&self, args: I) -> Result<Value>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let out = self.ctl_output(&args)?;
        let line = format!("cvlanctl {}", redact(&args).join(" "));
        let stdout = check(out, &line)?;
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout)
            .map_err(|e| Error::Unexpected(format!("{line}: not JSON ({e}): {stdout}")))
    }

    /// Calls the REST API with curl inside the control plane's namespace, as the superadmin.
    ///
    /// # Errors
    /// On a non-2xx answer ([`Error::Http`] with the server's body) or curl failing.
    pub fn rest(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{REST}{path}");
        let mut args: Vec<String> = vec![
            "curl".into(),
            "-sS".into(),
            "-m".into(),
            "20".into(),
            "-X".into(),
            method.into(),
            "-H".into(),
            "content-type: application/json".into(),
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if !self.session.is_empty() {
            args.push("-H".into());
            args.push(format!("authorization: Bearer {}", self.session));
        }
        if let Some(b) = body {
            args.push("--data-binary".into());
            args.push(b.to_string());
        }
        args.push(url);
        let out = self.host.run_ok(&args)?;
        let (text, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        let code: u16 = code.trim().parse().unwrap_or(0);
        if !(200..300).contains(&code) {
            return Err(Error::Http {
                method: method.to_string(),
                path: path.to_string(),
                status: code,
                body: text.to_string(),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(text)
            .map_err(|e| Error::Unexpected(format!("{method} {path}: not JSON ({e}): {text}")))
    }

    /// `cvlanctl tenant create NAME`.
    ///
    /// # Errors
    /// As [`ControlPlane::ctl`].
    pub fn create_tenant(&self, name: &str) -> Result<Value> {
        self.ctl(["tenant", "create", name])
    }

    /// `cvlanctl cvlan create --tenant T NAME --ipv4 P4 [--ipv6 P6]`.
    ///
    /// # Errors
    /// As [`ControlPlane::ctl`].
    pub fn create_cvlan(
        &self,
        tenant: &str,
        name: &str,
        ipv4: &str,
        ipv6: Option<&str>,
    ) -> Result<Value> {
        let mut a = vec!["cvlan", "create", "--tenant", tenant, name, "--ipv4", ipv4];
        if let Some(p) = ipv6 {
            a.extend(["--ipv6", p]);
        }
        self.ctl(a)
    }

    /// `cvlanctl token create --tenant T --cvlan C EXTRA…`; returns (token id, token string).
    ///
    /// # Errors
    /// As [`ControlPlane::ctl`], or when the answer lacks either.
    pub fn create_token(
        &self,
        tenant: &str,
        cvlan: &str,
        extra: &[&str],
    ) -> Result<(String, Secret)> {
        let mut a = vec!["token", "create", "--tenant", tenant, "--cvlan", cvlan];
        a.extend_from_slice(extra);
        let v = self.ctl(a)?;
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| Error::Unexpected(format!("token create: no {k:?} in the answer")))
        };
        Ok((field("id")?, Secret(field("token")?)))
    }
}

/// A registration token or other secret: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A `cvlan-agent` daemon in one host, and the `cvlan` CLI to talk to it.
pub struct Agent {
    host: Host,
    bins: Binaries,
    proc: Option<Proc>,
    state_dir: PathBuf,
    socket: PathBuf,
}

impl fmt::Debug for Agent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.host.name())
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts `cvlan-agent --state-dir <host dir>/agent --socket <host dir>/agent.sock` in the
    /// host and waits for its socket.
    ///
    /// # Errors
    /// When it cannot be started or its socket does not appear within 10 s.
    pub fn start(host: &Host, bins: &Binaries) -> Result<Agent> {
        let mut a = Agent {
            host: host.clone(),
            bins: bins.clone(),
            proc: None,
            state_dir: host.dir().join("agent"),
            socket: host.dir().join("agent.sock"),
        };
        a.launch()?;
        Ok(a)
    }

    fn launch(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let mut p = self.host.spawn([
            self.bins.agent.as_os_str(),
            OsStr::new("--state-dir"),
            self.state_dir.as_os_str(),
            OsStr::new("--socket"),
            self.socket.as_os_str(),
        ])?;
        let sock = self.socket.clone();
        let up = wait_until(Duration::from_secs(10), "the agent's socket", || {
            if sock.exists() {
                return Some(true);
            }
            matches!(p.try_wait(), Ok(Some(_))).then_some(false)
        });
        match up {
            Ok(true) => {
                self.proc = Some(p);
                Ok(())
            }
            Ok(false) | Err(_) => Err(Error::Unexpected(format!(
                "cvlan-agent in {} did not open its socket; log:\n{}",
                self.host.name(),
                p.log()
            ))),
        }
    }

    /// The host it runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        self.proc.as_ref().map(Proc::log).unwrap_or_default()
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 5 s); its state directory stays.
    pub fn stop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.stop(Duration::from_secs(5));
        }
    }

    /// Stops and starts the daemon again with the same state directory and socket.
    ///
    /// # Errors
    /// As [`Agent::start`].
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.launch()
    }

    /// Runs `cvlan --socket S ARGS` in the host; the output as it is.
    ///
    /// # Errors
    /// When it cannot be started.
    pub fn cvlan<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.host.command(&self.bins.cli);
        c.arg("--socket").arg(&self.socket).args(args);
        c.output().map_err(|source| Error::Spawn {
            program: "cvlan".into(),
            source,
        })
    }

    /// Runs `cvlan --socket S ARGS` and returns stdout.
    ///
    /// # Errors
    /// When it fails ([`Error::Failed`] with its stderr).
    pub fn cvlan_ok<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<String> = args
            .into_iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect();
        let line = format!("cvlan {}", redact(&args).join(" "));
        check(self.cvlan(&args)?, &line)
    }

    /// `cvlan up --server URL --auth-key TOKEN --hostname <host name>`.
    ///
    /// # Errors
    /// When it fails (the error carries the CLI's message).
    pub fn up(&self, server: &str, token: &Secret) -> Result<String> {
        self.cvlan_ok([
            "up",
            "--server",
            server,
            "--auth-key",
            &token.0,
            "--hostname",
            self.host.name(),
        ])
    }

    /// `cvlan status --json`, parsed.
    ///
    /// # Errors
    /// When it fails or does not print JSON.
    pub fn status(&self) -> Result<Value> {
        let s = self.cvlan_ok(["status", "--json"])?;
        serde_json::from_str(&s)
            .map_err(|e| Error::Unexpected(format!("cvlan status --json: not JSON ({e}): {s}")))
    }

    /// This node's CVLAN IPv4 address, from `cvlan ip`.
    ///
    /// # Errors
    /// When `cvlan ip` fails or prints no IPv4 address.
    pub fn ipv4(&self) -> Result<Ipv4Addr> {
        let s = self.cvlan_ok(["ip"])?;
        first_addr(&s).ok_or_else(|| Error::Unexpected(format!("cvlan ip printed no IPv4: {s}")))
    }

    /// This node's CVLAN IPv6 address, from `cvlan ip`.
    ///
    /// # Errors
    /// When `cvlan ip` fails or prints no IPv6 address.
    pub fn ipv6(&self) -> Result<Ipv6Addr> {
        let s = self.cvlan_ok(["ip"])?;
        first_addr(&s).ok_or_else(|| Error::Unexpected(format!("cvlan ip printed no IPv6: {s}")))
    }

    /// Names of the peers in `cvlan status --json` (the `peers` array's `name` fields).
    ///
    /// # Errors
    /// As [`Agent::status`].
    pub fn peer_names(&self) -> Result<Vec<String>> {
        let st = self.status()?;
        Ok(st
            .get("peers")
            .and_then(Value::as_array)
            .map(|ps| {
                ps.iter()
                    .filter_map(|p| p.get("name").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The first whitespace- or punctuation-separated word of `s` that parses as `A` (a `/len`
/// suffix is ignored).
pub fn first_addr<A: std::str::FromStr>(s: &str) -> Option<A> {
    s.split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '[' || c == ']')
        .map(|w| w.split('/').next().unwrap_or(w))
        .find_map(|w| w.parse().ok())
}

/// Hides the value after secret-bearing flags, and token-looking words.
pub(crate) fn redact(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut hide_next = false;
    for a in args {
        if hide_next || a.starts_with("cvt1.") || a.to_ascii_lowercase().contains("bearer ") {
            out.push("<redacted>".to_string());
        } else {
            out.push(a.clone());
        }
        hide_next = matches!(
            a.as_str(),
            "--auth-key" | "--password" | "--token" | "--private-key"
        );
    }
    out
}

fn check(out: Output, line: &str) -> Result<String> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            command: line.to_string(),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn redaction_hides_tokens_and_values_of_secret_flags() {
        let args: Vec<String> = [
            "up",
            "--auth-key",
            "abc",
            "cvt1.x.y",
            "authorization: Bearer q",
            "--hostname",
            "h",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            redact(&args),
            [
                "up",
                "--auth-key",
                "<redacted>",
                "<redacted>",
                "<redacted>",
                "--hostname",
                "h"
            ]
        );
    }

    #[test]
    fn first_addr_finds_addresses_in_cli_output() {
        let s = "ipv4: 10.20.0.3/24\nipv6: fd20::3\n";
        assert_eq!(first_addr::<Ipv4Addr>(s), Some(Ipv4Addr::new(10, 20, 0, 3)));
        assert_eq!(first_addr::<Ipv6Addr>(s), "fd20::3".parse().ok());
        assert_eq!(first_addr::<Ipv4Addr>("none"), None);
    }

    #[test]
    fn missing_binaries_say_where_they_were_looked_for() {
        let dir = std::env::temp_dir().join(format!("cvlab-nobin-{}", std::process::id()));
        let err = find_binary("cvlan-agent", Some(&dir)).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cvlan-agent") && msg.contains(&*dir.to_string_lossy()),
            "{msg}"
        );
        assert!(msg.contains("cargo build"), "{msg}");
    }
}
