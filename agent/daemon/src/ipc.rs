//! The local control protocol between `cvlan` and `cvlan-agent`: JSON lines over a Unix
//! socket that only its owner (root) may open.
//!
//! Each request is one line `{"v":1,"cmd":"status"}`, each response one line
//! `{"v":1,"ok":true,"reply":{…}}` or `{"v":1,"ok":false,"error":{"code":"…","message":"…"}}`.
//! A daemon answers a request of another version with an `unsupported-version` error, so an
//! old CLI against a new daemon fails clearly instead of misreading fields.

use std::fmt;
use std::future::Future;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// Protocol version spoken here.
pub const VERSION: u32 = 1;
/// Longest request or response line accepted.
const MAX_LINE: usize = 4 << 20;

/// `cvlan up`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpRequest {
    /// Control plane URL; required for the first registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Registration token; required for the first registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_key: Option<String>,
    /// Node name to register with (default: the host name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// CA certificate(s) to trust instead of the token's pin (`--ca-file` contents).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

impl fmt::Debug for UpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpRequest")
            .field("server", &self.server)
            .field("auth_key", &self.auth_key.as_ref().map(|_| "<redacted>"))
            .field("hostname", &self.hostname)
            .field("ca_pem", &self.ca_pem.is_some())
            .finish()
    }
}

/// A request from the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Register (if needed) and bring the tunnels up.
    Up(UpRequest),
    /// Bring the tunnels down and stop talking to the control plane; keeps the identity.
    Down,
    /// Report the state.
    Status,
    /// Bring everything down and forget the identity.
    Logout,
}

/// Lifecycle state of the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentState {
    /// Never registered (or logged out locally): `cvlan up --server … --auth-key …`.
    NeedsLogin,
    /// Registered but `cvlan down`: no tunnels, no control connection.
    Stopped,
    /// Registered, waiting for the first network map.
    Starting,
    /// Tunnels configured from a network map (the control connection may be down; see
    /// [`ControlStatus::connected`]).
    Running,
    /// The control plane deleted or expired this node; tunnels are down.
    LoggedOut,
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AgentState::NeedsLogin => "needs-login",
            AgentState::Stopped => "stopped",
            AgentState::Starting => "starting",
            AgentState::Running => "running",
            AgentState::LoggedOut => "logged-out",
        })
    }
}

/// The control connection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// The Sync stream is up.
    pub connected: bool,
    /// Version of the applied network map.
    pub map_version: u64,
    /// Why the last attempt failed, while disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When the stream last delivered a map (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_unix: Option<u64>,
}

/// This node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfStatus {
    /// Node id.
    pub id: String,
    /// Node name.
    pub name: String,
    /// CVLAN addresses with prefix lengths.
    pub addresses: Vec<String>,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// UDP port of the data plane, while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<u16>,
    /// TUN device, while the data plane runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tun: Option<String>,
    /// Client certificate expiry (Unix seconds).
    pub cert_expires_unix: u64,
}

/// One peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Node id (external peer id for static peers).
    pub node_id: String,
    /// Name.
    pub name: String,
    /// WireGuard public key (base64).
    pub public_key: String,
    /// Allowed IPs (its addresses first).
    pub addresses: Vec<String>,
    /// Current UDP endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Last handshake (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handshake_unix: Option<u64>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// A static external WireGuard peer.
    #[serde(default)]
    pub external: bool,
    /// A gateway.
    #[serde(default)]
    pub gateway: bool,
}

/// `cvlan status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Lifecycle state.
    pub state: AgentState,
    /// One line for humans ("logged out by the control plane: …", …).
    pub message: String,
    /// Control plane URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The control connection.
    pub control: ControlStatus,
    /// This node, once registered.
    #[serde(rename = "self", default, skip_serializing_if = "Option::is_none")]
    pub self_node: Option<SelfStatus>,
    /// Peers.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

/// A successful answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Something to tell the user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The state after the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
}

/// Kinds of failure, so scripts need not parse messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCode {
    /// Bad input (URL, token shape, CA file, …).
    InvalidArgument,
    /// The control plane refused the credentials (bad or expired token).
    Unauthenticated,
    /// The control plane refused the operation (revoked or used token, …).
    PermissionDenied,
    /// The command does not fit the current state (e.g. already registered elsewhere).
    FailedPrecondition,
    /// The control plane could not be reached.
    Unavailable,
    /// The request is of a protocol version this daemon does not speak.
    UnsupportedVersion,
    /// Anything else.
    Internal,
}

/// A failed answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct IpcError {
    /// Kind.
    pub code: ErrorCode,
    /// What to tell the user.
    pub message: String,
}

impl IpcError {
    /// An error of `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        IpcError {
            code,
            message: message.into(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RequestFrame {
    v: u32,
    #[serde(flatten)]
    req: Request,
}

#[derive(Serialize, Deserialize)]
struct ResponseFrame {
    v: u32,
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<IpcError>,
}

fn encode_response(r: &Result<Reply, IpcError>) -> Vec<u8> {
    let frame = match r {
        Ok(reply) => ResponseFrame {
            v: VERSION,
            ok: true,
            reply: Some(reply.clone()),
            error: None,
        },
        Err(e) => ResponseFrame {
            v: VERSION,
            ok: false,
            reply: None,
            error: Some(e.clone()),
        },
    };
    let mut v = serde_json::to_vec(&frame).unwrap_or_else(|_| {
        br#"{"v":1,"ok":false,"error":{"code":"internal","message":"unencodable reply"}}"#.to_vec()
    });
    v.push(b'\n');
    v
}

/// Parses one request line; the error is what to send back.
fn decode_request(line: &[u8]) -> Result<Request, IpcError> {
    let v: serde_json::Value = serde_json::from_slice(line)
        .map_err(|e| IpcError::new(ErrorCode::InvalidArgument, format!("bad request: {e}")))?;
    match v.get("v").and_then(serde_json::Value::as_u64) {
        Some(n) if n == u64::from(VERSION) => {}
        Some(n) => {
            return Err(IpcError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "cvlan-agent speaks protocol version {VERSION}, the request is version {n}; use matching cvlan and cvlan-agent binaries"
                ),
            ));
        }
        None => {
            return Err(IpcError::new(
                ErrorCode::InvalidArgument,
                "bad request: no protocol version",
            ));
        }
    }
    serde_json::from_value::<RequestFrame>(v)
        .map(|f| f.req)
        .map_err(|e| IpcError::new(ErrorCode::InvalidArgument, format!("bad request: {e}")))
}

/// Binds the control socket at `path`, owner-only (0600), creating its directory (0700) if
/// missing. A leftover socket from a dead daemon is replaced; a live one is an error.
///
/// # Errors
/// I/O errors, or `AddrInUse` when another daemon answers on `path`.
pub async fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another cvlan-agent is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // Create the socket already owner-only: a chmod after bind would leave a window.
    // SAFETY: umask only swaps the process's file creation mask; no memory is involved.
    let old = unsafe { libc::umask(0o177) };
    let res = UnixListener::bind(path);
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(old) };
    let l = res?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// Serves requests on `listener` until the future is dropped. Connections from users other
/// than root and the daemon's own user are refused even if the file mode were loosened.
pub async fn serve<F, Fut>(listener: UnixListener, handler: F)
where
    F: Fn(Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, IpcError>> + Send + 'static,
{
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        match stream.peer_cred() {
            Ok(c) if c.uid() == 0 || c.uid() == me => {}
            other => {
                tracing::warn!(peer = ?other.map(|c| c.uid()), "refused a control socket client");
                continue;
            }
        }
        let h = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, h).await {
                tracing::debug!(error = %e, "control socket connection ended");
            }
        });
    }
}

async fn connection<F, Fut>(stream: UnixStream, handler: F) -> io::Result<()>
where
    F: Fn(Request) -> Fut,
    Fut: Future<Output = Result<Reply, IpcError>>,
{
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE {
            let e = IpcError::new(ErrorCode::InvalidArgument, "request too large");
            w.write_all(&encode_response(&Err(e))).await?;
            return Ok(());
        }
        let resp = match decode_request(&line) {
            Ok(req) => handler(req).await,
            Err(e) => Err(e),
        };
        w.write_all(&encode_response(&resp)).await?;
    }
}

/// Why a CLI call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The daemon is not there.
    #[error(
        "cannot reach cvlan-agent at {path}: {source} (is cvlan-agent running, and are you root?)"
    )]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// OS error.
        #[source]
        source: io::Error,
    },
    /// The connection broke.
    #[error("talking to cvlan-agent: {0}")]
    Io(#[from] io::Error),
    /// No answer in time.
    #[error("cvlan-agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not this protocol.
    #[error("unexpected answer from cvlan-agent: {0}")]
    Protocol(String),
    /// The daemon refused.
    #[error("{0}")]
    Remote(IpcError),
}

/// Sends one request and waits up to `timeout` for its answer.
///
/// # Errors
/// [`ClientError`].
pub async fn call(path: &Path, req: &Request, timeout: Duration) -> Result<Reply, ClientError> {
    let fut = async {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|source| ClientError::Connect {
                path: path.to_path_buf(),
                source,
            })?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_vec(&RequestFrame {
            v: VERSION,
            req: req.clone(),
        })
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        line.push(b'\n');
        w.write_all(&line).await?;
        let r = BufReader::new(r);
        let mut buf = Vec::new();
        r.take(MAX_LINE as u64).read_until(b'\n', &mut buf).await?;
        if buf.is_empty() {
            return Err(ClientError::Protocol(
                "connection closed without an answer".into(),
            ));
        }
        let f: ResponseFrame =
            serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if f.v != VERSION {
            return Err(ClientError::Protocol(format!(
                "cvlan-agent speaks protocol version {}, this cvlan speaks {VERSION}",
                f.v
            )));
        }
        match (f.ok, f.reply, f.error) {
            (true, Some(r), _) => Ok(r),
            (true, None, _) => Ok(Reply::default()),
            (false, _, Some(e)) => Err(ClientError::Remote(e)),
            (false, _, None) => Err(ClientError::Protocol("error without details".into())),
        }
    };
    tokio::time::timeout(timeout, fut)
        .await
        .map_err(|_| ClientError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::TempDir;

    async fn echo(req: Request) -> Result<Reply, IpcError> {
        match req {
            Request::Up(u) => Ok(Reply {
                message: Some(format!("up {}", u.server.unwrap_or_default())),
                status: None,
            }),
            Request::Status => Ok(Reply {
                message: None,
                status: Some(Status {
                    state: AgentState::Running,
                    message: "ok".into(),
                    server: Some("https://127.0.0.1:8443".into()),
                    control: ControlStatus {
                        connected: true,
                        map_version: 7,
                        ..Default::default()
                    },
                    self_node: Some(SelfStatus {
                        name: "a1".into(),
                        addresses: vec!["10.20.0.2/24".into()],
                        ..Default::default()
                    }),
                    peers: vec![PeerStatus {
                        name: "a2".into(),
                        rx_bytes: 5,
                        ..Default::default()
                    }],
                }),
            }),
            Request::Down => Err(IpcError::new(ErrorCode::FailedPrecondition, "not up")),
            Request::Logout => Ok(Reply::default()),
        }
    }

    #[tokio::test]
    async fn requests_and_replies_round_trip_over_the_socket() {
        let t = TempDir::new("ipc");
        let path = t.0.join("run").join("cvlan.sock");
        let l = bind(&path).await.expect("bind");
        let server = tokio::spawn(serve(l, echo));
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().expect("dir"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);

        let t5 = Duration::from_secs(5);
        let r = call(
            &path,
            &Request::Up(UpRequest {
                server: Some("https://cp:8443".into()),
                auth_key: Some("cvt1.secret".into()),
                ..Default::default()
            }),
            t5,
        )
        .await
        .expect("up");
        assert_eq!(r.message.as_deref(), Some("up https://cp:8443"));
        let s = call(&path, &Request::Status, t5)
            .await
            .expect("status")
            .status
            .expect("status body");
        assert_eq!(s.state, AgentState::Running);
        assert_eq!(s.peers[0].rx_bytes, 5);
        assert_eq!(s.self_node.expect("self").addresses, vec!["10.20.0.2/24"]);
        match call(&path, &Request::Down, t5).await {
            Err(ClientError::Remote(e)) => {
                assert_eq!(e.code, ErrorCode::FailedPrecondition);
                assert_eq!(e.message, "not up");
            }
            other => panic!("expected a remote error, got {other:?}"),
        }
        server.abort();
    }

    #[tokio::test]
    async fn a_request_of_another_version_or_malformed_gets_a_clear_error() {
        let t = TempDir::new("ipcv");
        let path = t.0.join("s.sock");
        let l = bind(&path).await.expect("bind");
        let server = tokio::spawn(serve(l, echo));
        for (line, code) in [
            (&br#"{"v":2,"cmd":"status"}"#[..], "unsupported-version"),
            (&br#"{"cmd":"status"}"#[..], "invalid-argument"),
            (&b"not json"[..], "invalid-argument"),
            (&br#"{"v":1,"cmd":"reboot"}"#[..], "invalid-argument"),
        ] {
            let s = UnixStream::connect(&path).await.expect("connect");
            let (r, mut w) = s.into_split();
            w.write_all(line).await.expect("write");
            w.write_all(b"\n").await.expect("write");
            let mut buf = String::new();
            BufReader::new(r).read_line(&mut buf).await.expect("read");
            let v: serde_json::Value = serde_json::from_str(&buf).expect("json");
            assert_eq!(v["ok"], false, "{buf}");
            assert_eq!(v["error"]["code"], code, "{buf}");
        }
        // The wire form is stable: what the lab's scripts may rely on.
        let s = UnixStream::connect(&path).await.expect("connect");
        let (r, mut w) = s.into_split();
        w.write_all(b"{\"v\":1,\"cmd\":\"status\"}\n")
            .await
            .expect("write");
        let mut buf = String::new();
        BufReader::new(r).read_line(&mut buf).await.expect("read");
        let v: serde_json::Value = serde_json::from_str(&buf).expect("json");
        assert_eq!(v["v"], 1);
        assert_eq!(v["reply"]["status"]["state"], "running");
        assert_eq!(v["reply"]["status"]["self"]["name"], "a1");
        server.abort();
    }

    #[tokio::test]
    async fn a_stale_socket_is_replaced_but_a_live_daemon_is_not_displaced() {
        let t = TempDir::new("ipcs");
        std::fs::create_dir_all(&t.0).expect("mkdir");
        let path = t.0.join("s.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale"));
        let l = bind(&path).await.expect("rebind over a stale socket");
        let err = bind(&path).await.expect_err("live socket");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(l);
    }

    #[tokio::test]
    async fn a_missing_daemon_says_how_to_fix_it() {
        let t = TempDir::new("ipcm");
        let e = call(
            &t.0.join("none.sock"),
            &Request::Status,
            Duration::from_secs(1),
        )
        .await
        .expect_err("no daemon");
        assert!(e.to_string().contains("is cvlan-agent running"), "{e}");
    }

    #[test]
    fn the_auth_key_never_shows_in_debug_output() {
        let u = UpRequest {
            auth_key: Some("cvt1.very-secret".into()),
            ..Default::default()
        };
        assert!(!format!("{:?}", Request::Up(u)).contains("very-secret"));
    }
}
