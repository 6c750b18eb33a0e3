//! The CLI's small state file: the server it last logged in to and the session token, kept in
//! `$CVLANCTL_CONFIG` or `~/.config/cvlan/cli.json` with mode 0600.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

/// What `cvlanctl login` remembers.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// Server URL, e.g. `http://127.0.0.1:8080`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Session token from `POST /api/v1/auth/login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Who logged in, for messages only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("server", &self.server)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("email", &self.email)
            .finish()
    }
}

/// Where the config lives: `$CVLANCTL_CONFIG`, else `$HOME/.config/cvlan/cli.json`.
///
/// # Errors
/// Neither variable set.
pub fn path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CVLANCTL_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| {
            anyhow!("neither CVLANCTL_CONFIG nor HOME is set; cannot find the config file")
        })?;
    Ok(PathBuf::from(home)
        .join(".config")
        .join("cvlan")
        .join("cli.json"))
}

/// Reads the config; a missing file is an empty config.
///
/// # Errors
/// Unreadable or malformed files.
pub fn load(path: &Path) -> Result<Config> {
    match fs::read_to_string(path) {
        Ok(s) => serde_json::from_str(&s).with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes the config atomically with mode 0600 (its directory 0700 when created here).
///
/// # Errors
/// File system errors.
pub fn save(path: &Path, cfg: &Config) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cli.json".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let body = serde_json::to_string_pretty(cfg)?;
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        // create_new with a mode is subject to the umask, which can only remove bits; make sure.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(body.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        anyhow::Error::from(e).context(format!("writing {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_token() {
        let c = Config {
            server: Some("http://x".into()),
            token: Some("cvs_supersecret".into()),
            email: None,
        };
        let d = format!("{c:?}");
        assert!(!d.contains("supersecret"), "{d}");
        assert!(d.contains("redacted"));
    }

    #[test]
    fn saved_config_is_private_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("cvlanctl-config-test-{}", std::process::id()));
        let p = dir.join("sub").join("cli.json");
        let c = Config {
            server: Some("http://127.0.0.1:1".into()),
            token: Some("cvs_x".into()),
            email: Some("a@b.c".into()),
        };
        save(&p, &c).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&p).unwrap(), c);
        assert_eq!(load(&dir.join("absent.json")).unwrap(), Config::default());
        fs::remove_dir_all(&dir).unwrap();
    }
}
