//! The state directory: everything that makes this node the same node after a restart.
//!
//! ```text
//! DIR/ (0700)
//!   wg.key        WireGuard private key (base64)
//!   machine.key   ECDSA P-256 machine key (PKCS#8 PEM)
//!   client.crt    mTLS client certificate from the control plane (PEM)
//!   ca.pem        the control plane CA trusted from registration on (PEM)
//!   node.json     registration: server URL, node id/name/addresses, certificate times, flags
//!   map.json      last applied network map (proto3 JSON) with its version
//! ```
//!
//! Every file is 0600 and replaced atomically (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new content, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, MachineKey, WgKey};

/// File names inside the state directory.
pub mod files {
    /// WireGuard private key.
    pub const WG_KEY: &str = "wg.key";
    /// Machine key.
    pub const MACHINE_KEY: &str = "machine.key";
    /// Client certificate.
    pub const CLIENT_CERT: &str = "client.crt";
    /// Trusted CA.
    pub const CA: &str = "ca.pem";
    /// Registration.
    pub const NODE: &str = "node.json";
    /// Cached network map.
    pub const MAP: &str = "map.json";
    /// Every file the agent writes (what `logout` removes).
    pub const ALL: &[&str] = &[WG_KEY, MACHINE_KEY, CLIENT_CERT, CA, NODE, MAP];
}

/// Why the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was attempted.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A JSON file does not parse.
    #[error("{path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored key does not parse.
    #[error("{path}: {source}")]
    Key {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: KeyError,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

/// What the node learnt at registration, plus the few flags that must survive a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    /// Control plane node-listener URL (`https://host:port`).
    pub server: String,
    /// Node id.
    pub node_id: String,
    /// Node name as the control plane knows it.
    pub name: String,
    /// Tenant id.
    #[serde(default)]
    pub tenant_id: String,
    /// CVLAN id.
    #[serde(default)]
    pub cvlan_id: String,
    /// CVLAN IPv4 address (no prefix length).
    #[serde(default)]
    pub ipv4: String,
    /// CVLAN IPv6 address (no prefix length).
    #[serde(default)]
    pub ipv6: String,
    /// When the current client certificate was received (Unix seconds).
    pub cert_issued_at: u64,
    /// When it expires (Unix seconds).
    pub cert_expires_at: u64,
    /// UDP port the data plane last listened on; reused so peers' cached endpoints stay right.
    #[serde(default)]
    pub listen_port: u16,
    /// False after `cvlan down`: a restart keeps the tunnels down.
    pub want_running: bool,
    /// Set when the control plane said the node no longer exists (deleted or expired).
    #[serde(default)]
    pub logged_out: Option<String>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Handle on the state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating if needed) the directory and makes it owner-only.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, StateError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
            .map_err(io_err("chmod", &dir))?;
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Replaces `name` with `data` atomically (0600).
    ///
    /// # Errors
    /// [`StateError::Io`]; the old content is then still in place.
    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), StateError> {
        let target = self.dir.join(name);
        let tmp = self.dir.join(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let res = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(data).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
            fs::rename(&tmp, &target).map_err(io_err("rename", &target))?;
            // The rename itself must reach the disk, or a crash can bring back the old file.
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", &self.dir))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }

    /// Reads `name`, `None` when it does not exist.
    ///
    /// # Errors
    /// [`StateError::Io`] for anything but "not found".
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateError> {
        let p = self.dir.join(name);
        match fs::read(&p) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    /// Reads `name` as UTF-8 text.
    ///
    /// # Errors
    /// [`StateError::Io`] (also for invalid UTF-8).
    pub fn read_string(&self, name: &str) -> Result<Option<String>, StateError> {
        match self.read(name)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v).map(Some).map_err(|e| StateError::Io {
                op: "read",
                path: self.dir.join(name),
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            }),
        }
    }

    fn read_json<T: for<'de> Deserialize<'de>>(&self, name: &str) -> Result<Option<T>, StateError> {
        match self.read(name)? {
            None => Ok(None),
            Some(v) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|source| StateError::Corrupt {
                    path: self.dir.join(name),
                    source,
                }),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, v: &T) -> Result<(), StateError> {
        let mut s = serde_json::to_vec_pretty(v).map_err(|source| StateError::Corrupt {
            path: self.dir.join(name),
            source,
        })?;
        s.push(b'\n');
        self.write(name, &s)
    }

    /// Removes `name` if present.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn remove(&self, name: &str) -> Result<(), StateError> {
        let p = self.dir.join(name);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &p)(e)),
        }
    }

    /// Removes every file the agent keeps (identity included).
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn remove_all(&self) -> Result<(), StateError> {
        for f in files::ALL {
            self.remove(f)?;
        }
        Ok(())
    }

    /// The WireGuard key, created on first use.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn wg_key(&self) -> Result<WgKey, StateError> {
        if let Some(s) = self.read_string(files::WG_KEY)? {
            return WgKey::from_base64(&s).map_err(|source| StateError::Key {
                path: self.dir.join(files::WG_KEY),
                source,
            });
        }
        let k = WgKey::generate();
        self.write(files::WG_KEY, format!("{}\n", k.to_base64()).as_bytes())?;
        Ok(k)
    }

    /// The machine key, created on first use.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn machine_key(&self) -> Result<MachineKey, StateError> {
        let path = self.dir.join(files::MACHINE_KEY);
        if let Some(s) = self.read_string(files::MACHINE_KEY)? {
            return MachineKey::from_pem(&s).map_err(|source| StateError::Key { path, source });
        }
        let k = MachineKey::generate().map_err(|source| StateError::Key { path, source })?;
        self.write(files::MACHINE_KEY, k.pem().as_bytes())?;
        Ok(k)
    }

    /// The registration, `None` before the first `cvlan up`.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn registration(&self) -> Result<Option<Registration>, StateError> {
        self.read_json(files::NODE)
    }

    /// Stores the registration.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn save_registration(&self, r: &Registration) -> Result<(), StateError> {
        self.write_json(files::NODE, r)
    }

    /// The cached network map, `None` when there is none (or it no longer parses: a fresh
    /// snapshot replaces it anyway, so a corrupt cache is not worth failing over).
    pub fn cached_map(&self) -> Option<cvlan_proto::v1::NetworkMap> {
        match self.read_json(files::MAP) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the cached network map");
                None
            }
        }
    }

    /// Caches the network map.
    ///
    /// # Errors
    /// [`StateError`].
    pub fn save_map(&self, m: &cvlan_proto::v1::NetworkMap) -> Result<(), StateError> {
        self.write_json(files::MAP, m)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary directory removed on drop (also when the test fails).
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "cvlan-agent-{tag}-{}-{}",
                std::process::id(),
                TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    fn reg() -> Registration {
        Registration {
            server: "https://127.0.0.1:8443".into(),
            node_id: "n1".into(),
            name: "a1".into(),
            tenant_id: "t".into(),
            cvlan_id: "c".into(),
            ipv4: "10.20.0.2".into(),
            ipv6: "fd20::2".into(),
            cert_issued_at: 100,
            cert_expires_at: 200,
            listen_port: 51820,
            want_running: true,
            logged_out: None,
        }
    }

    #[test]
    fn the_directory_and_every_file_are_owner_only() {
        let t = TempDir::new("perm");
        let s = StateDir::open(t.0.join("state")).expect("open");
        assert_eq!(mode(s.path()), 0o700);
        s.wg_key().expect("wg");
        s.machine_key().expect("machine");
        s.save_registration(&reg()).expect("reg");
        s.write(files::CLIENT_CERT, b"cert").expect("cert");
        for f in [
            files::WG_KEY,
            files::MACHINE_KEY,
            files::NODE,
            files::CLIENT_CERT,
        ] {
            assert_eq!(mode(&s.path().join(f)), 0o600, "{f}");
        }
    }

    #[test]
    fn a_loose_existing_directory_is_tightened_to_0700() {
        let t = TempDir::new("loose");
        fs::create_dir_all(&t.0).expect("mkdir");
        fs::set_permissions(&t.0, fs::Permissions::from_mode(0o755)).expect("chmod");
        let s = StateDir::open(&t.0).expect("open");
        assert_eq!(mode(s.path()), 0o700);
    }

    #[test]
    fn keys_and_registration_survive_a_reopen() {
        let t = TempDir::new("reload");
        let (wg, mk) = {
            let s = StateDir::open(&t.0).expect("open");
            s.save_registration(&reg()).expect("save");
            (s.wg_key().expect("wg"), s.machine_key().expect("mk"))
        };
        let s = StateDir::open(&t.0).expect("reopen");
        assert_eq!(s.wg_key().expect("wg"), wg);
        assert_eq!(s.machine_key().expect("mk").pem(), mk.pem());
        assert_eq!(s.registration().expect("reg"), Some(reg()));
    }

    #[test]
    fn a_write_replaces_the_whole_file_and_leaves_no_temporaries() {
        let t = TempDir::new("atomic");
        let s = StateDir::open(&t.0).expect("open");
        s.write("x", b"a much longer first content").expect("w1");
        s.write("x", b"short").expect("w2");
        assert_eq!(s.read("x").expect("read").as_deref(), Some(&b"short"[..]));
        let names: Vec<_> = fs::read_dir(&t.0)
            .expect("ls")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf8"))
            .collect();
        assert_eq!(names, vec!["x".to_string()]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content() {
        let t = TempDir::new("fail");
        let s = StateDir::open(&t.0).expect("open");
        s.write("x", b"old").expect("w1");
        // A directory in the way makes the rename fail after the temporary was written.
        fs::create_dir(t.0.join("y")).expect("mkdir");
        fs::write(t.0.join("y").join("z"), b"keep").expect("fill");
        assert!(s.write("y", b"new").is_err());
        assert_eq!(s.read("x").expect("read").as_deref(), Some(&b"old"[..]));
        let stray = fs::read_dir(&t.0)
            .expect("ls")
            .filter(|e| {
                e.as_ref()
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp.")
            })
            .count();
        assert_eq!(stray, 0);
    }

    #[test]
    fn a_corrupt_registration_is_an_error_but_a_corrupt_map_is_ignored() {
        let t = TempDir::new("corrupt");
        let s = StateDir::open(&t.0).expect("open");
        s.write(files::NODE, b"{not json").expect("w");
        assert!(matches!(s.registration(), Err(StateError::Corrupt { .. })));
        s.write(files::MAP, b"{not json").expect("w");
        assert!(s.cached_map().is_none());
    }

    #[test]
    fn the_network_map_round_trips_as_proto3_json() {
        let t = TempDir::new("map");
        let s = StateDir::open(&t.0).expect("open");
        let m = cvlan_proto::v1::NetworkMap {
            version: 42,
            cvlan_ipv4_prefix: "10.20.0.0/24".into(),
            peers: vec![cvlan_proto::v1::Peer {
                node_id: "p".into(),
                name: "peer".into(),
                allowed_ips: vec!["10.20.0.3/32".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        s.save_map(&m).expect("save");
        assert_eq!(s.cached_map(), Some(m));
    }

    #[test]
    fn remove_all_deletes_identity_and_leaves_the_directory() {
        let t = TempDir::new("rm");
        let s = StateDir::open(&t.0).expect("open");
        s.wg_key().expect("wg");
        s.save_registration(&reg()).expect("reg");
        s.remove_all().expect("rm");
        assert!(s.registration().expect("reg").is_none());
        assert!(s.read(files::WG_KEY).expect("read").is_none());
        assert!(t.0.is_dir());
    }
}
