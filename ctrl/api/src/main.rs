//! `cvlan-api`: the CloudVLAN control plane daemon.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use cvlan_api::http::{Advertise, Mode};
use cvlan_api::secrets::Secret;
use cvlan_api::{server, service};
use serde::Deserialize;

#[derive(Parser)]
#[command(
    name = "cvlan-api",
    version,
    about = "CloudVLAN control plane: REST + gRPC admin API over SQLite or PostgreSQL"
)]
struct Cli {
    /// TOML config file; flags and CVLAN_* environment variables override it.
    #[arg(long, global = true, env = "CVLAN_CONFIG")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, env = "CVLAN_LOG_FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Default, Clone)]
struct Common {
    /// Directory for the SQLite database (and future state); created if missing.
    #[arg(long, env = "CVLAN_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:pass@host/db); default: SQLite under --data-dir.
    #[arg(long, env = "CVLAN_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(clap::Args, Default, Clone)]
struct Serve {
    #[command(flatten)]
    common: Common,
    /// Address to listen on for REST and gRPC.
    #[arg(long, env = "CVLAN_LISTEN")]
    listen: Option<SocketAddr>,
    /// Which tier to serve.
    #[arg(long, env = "CVLAN_MODE", value_enum)]
    mode: Option<Mode>,
    /// TLS certificate chain (PEM); with --tls-key enables TLS.
    #[arg(long, env = "CVLAN_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "CVLAN_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Trust X-Forwarded-For (only behind your own proxy).
    #[arg(long, env = "CVLAN_TRUST_FORWARDED")]
    trust_forwarded: bool,
    /// Registration tier URL(s) handed out by discovery (repeatable).
    #[arg(
        long = "advertise-registration",
        env = "CVLAN_ADVERTISE_REGISTRATION",
        value_delimiter = ','
    )]
    advertise_registration: Vec<String>,
    /// Session tier URL(s) handed out by discovery (repeatable).
    #[arg(
        long = "advertise-session",
        env = "CVLAN_ADVERTISE_SESSION",
        value_delimiter = ','
    )]
    advertise_session: Vec<String>,
    /// Audit retention in days.
    #[arg(long, env = "CVLAN_AUDIT_RETENTION_DAYS")]
    audit_retention_days: Option<i64>,
    /// Address of the node listener (agents: Register, Sync), TLS with the built-in CA
    /// [default: 127.0.0.1:8443].
    #[arg(long, env = "CVLAN_NODE_LISTEN")]
    node_listen: Option<SocketAddr>,
    /// Names (DNS or IP) agents use to reach the node listener, put in its certificate
    /// (repeatable) [default: the listen address if specific, localhost, 127.0.0.1].
    #[arg(
        long = "node-tls-name",
        env = "CVLAN_NODE_TLS_NAMES",
        value_delimiter = ','
    )]
    node_tls_names: Vec<String>,
    /// Do not serve the node listener.
    #[arg(long, env = "CVLAN_NO_NODE_LISTENER")]
    no_node_listener: bool,
    /// Ephemeral nodes not seen for this many seconds are removed [default: 600].
    #[arg(long, env = "CVLAN_EPHEMERAL_INACTIVITY_SECS")]
    ephemeral_inactivity_secs: Option<u64>,
    /// Directory of the built management UI (ui/dist), served at / on the API listener.
    #[arg(long, env = "CVLAN_UI_DIR")]
    ui_dir: Option<PathBuf>,
    /// The URL browsers use to reach this server (for SSO redirects), e.g.
    /// https://cvlan.example.com [default: the listen address]. An https URL also marks
    /// cookies Secure (TLS terminated by a proxy).
    #[arg(long, env = "CVLAN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Allow single sign-on providers on loopback over http (development and tests only).
    #[arg(long, env = "CVLAN_OIDC_ALLOW_LOOPBACK")]
    oidc_allow_loopback: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the control plane.
    Serve(Box<Serve>),
    /// Create (or reset the password of) a superadmin, offline.
    CreateAdmin {
        #[command(flatten)]
        common: Common,
        /// Email (login name).
        #[arg(long)]
        email: String,
        /// Password (8+ characters); prefer CVLAN_ADMIN_PASSWORD to keep it out of `ps`.
        #[arg(long, env = "CVLAN_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        common: Common,
    },
    /// Print the OpenAPI document of the REST API (the UI's client is generated from it).
    Openapi,
}

/// The `[serve]` table of the config file: the same settings as the flags.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileServe {
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    listen: Option<SocketAddr>,
    mode: Option<Mode>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    trust_forwarded: bool,
    #[serde(default)]
    advertise_registration: Vec<String>,
    #[serde(default)]
    advertise_session: Vec<String>,
    audit_retention_days: Option<i64>,
    node_listen: Option<SocketAddr>,
    #[serde(default)]
    node_tls_names: Vec<String>,
    #[serde(default)]
    no_node_listener: bool,
    ephemeral_inactivity_secs: Option<u64>,
    ui_dir: Option<PathBuf>,
    public_url: Option<String>,
    #[serde(default)]
    oidc_allow_loopback: bool,
}

impl From<FileServe> for Serve {
    fn from(f: FileServe) -> Self {
        Serve {
            common: Common {
                data_dir: f.data_dir,
                database_url: f.database_url,
            },
            listen: f.listen,
            mode: f.mode,
            tls_cert: f.tls_cert,
            tls_key: f.tls_key,
            trust_forwarded: f.trust_forwarded,
            advertise_registration: f.advertise_registration,
            advertise_session: f.advertise_session,
            audit_retention_days: f.audit_retention_days,
            node_listen: f.node_listen,
            node_tls_names: f.node_tls_names,
            no_node_listener: f.no_node_listener,
            ephemeral_inactivity_secs: f.ephemeral_inactivity_secs,
            ui_dir: f.ui_dir,
            public_url: f.public_url,
            oidc_allow_loopback: f.oidc_allow_loopback,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    serve: FileServe,
    #[serde(default, rename = "log-format")]
    log_format: Option<String>,
}

fn database_url(c: &Common) -> anyhow::Result<String> {
    if let Some(u) = &c.database_url {
        return Ok(u.clone());
    }
    let dir = c
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/lib/cvlan"));
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating data dir {}", dir.display()))?;
    Ok(format!("sqlite://{}", dir.join("cvlan.db").display()))
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CVLAN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,sqlx=warn,h2=warn,hyper=warn")
    });
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

fn merge(flag: Serve, file: Serve) -> Serve {
    Serve {
        common: Common {
            data_dir: flag.common.data_dir.or(file.common.data_dir),
            database_url: flag.common.database_url.or(file.common.database_url),
        },
        listen: flag.listen.or(file.listen),
        mode: flag.mode.or(file.mode),
        tls_cert: flag.tls_cert.or(file.tls_cert),
        tls_key: flag.tls_key.or(file.tls_key),
        trust_forwarded: flag.trust_forwarded || file.trust_forwarded,
        advertise_registration: if flag.advertise_registration.is_empty() {
            file.advertise_registration
        } else {
            flag.advertise_registration
        },
        advertise_session: if flag.advertise_session.is_empty() {
            file.advertise_session
        } else {
            flag.advertise_session
        },
        audit_retention_days: flag.audit_retention_days.or(file.audit_retention_days),
        node_listen: flag.node_listen.or(file.node_listen),
        node_tls_names: if flag.node_tls_names.is_empty() {
            file.node_tls_names
        } else {
            flag.node_tls_names
        },
        no_node_listener: flag.no_node_listener || file.no_node_listener,
        ephemeral_inactivity_secs: flag
            .ephemeral_inactivity_secs
            .or(file.ephemeral_inactivity_secs),
        ui_dir: flag.ui_dir.or(file.ui_dir),
        public_url: flag.public_url.or(file.public_url),
        oidc_allow_loopback: flag.oidc_allow_loopback || file.oidc_allow_loopback,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let file: FileConfig = match &cli.config {
        Some(p) => toml::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("parsing {}", p.display()))?,
        None => FileConfig::default(),
    };
    init_logs(
        cli.log_format
            .as_deref()
            .or(file.log_format.as_deref())
            .unwrap_or("text"),
    );
    match cli.cmd {
        Cmd::Openapi => {
            let doc = serde_json::to_string_pretty(&cvlan_api::http::openapi())?;
            std::io::Write::write_all(&mut std::io::stdout(), format!("{doc}\n").as_bytes())?;
        }
        Cmd::Migrate { common } => {
            let url = database_url(&common)?;
            let store = cvlan_store::Store::open(&url)
                .await
                .with_context(|| format!("opening {}", redact(&url)))?;
            store.close().await;
            tracing::info!("migrations applied");
        }
        Cmd::CreateAdmin {
            common,
            email,
            password,
        } => {
            let url = database_url(&common)?;
            let store = Arc::new(
                cvlan_store::Store::open(&url)
                    .await
                    .with_context(|| format!("opening {}", redact(&url)))?,
            );
            let svc = service::Service::new(store.clone(), service::Config::default()).await?;
            let u = svc
                .bootstrap_superadmin(&email, Secret(password))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            store.close().await;
            tracing::info!(user_id = %u.id, "superadmin ready");
        }
        Cmd::Serve(flags) => {
            let s = merge(*flags, file.serve.into());
            let url = database_url(&s.common)?;
            let listen = s
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let mode = s.mode.unwrap_or(Mode::All);
            let tls = match (&s.tls_cert, &s.tls_key) {
                (Some(c), Some(k)) => Some(server::tls_config(c, k)?),
                (None, None) => None,
                _ => bail!("--tls-cert and --tls-key go together"),
            };
            let store = Arc::new(
                cvlan_store::Store::open(&url)
                    .await
                    .with_context(|| format!("opening {}", redact(&url)))?,
            );
            let mut cfg = service::Config::default();
            if let Some(d) = s.audit_retention_days {
                if d < 1 {
                    bail!("--audit-retention-days must be at least 1");
                }
                cfg.audit_retention_days = d;
            }
            if let Some(d) = s.ephemeral_inactivity_secs {
                if d < 10 {
                    bail!("--ephemeral-inactivity-secs must be at least 10");
                }
                cfg.ephemeral_inactivity_secs = d;
            }
            cfg.oidc_allow_loopback = s.oidc_allow_loopback;
            let app = cvlan_api::build_app(store.clone(), mode, cfg)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let scheme = if tls.is_some() { "https" } else { "http" };
            let own = format!("{scheme}://{listen}");
            let app = {
                let mut a =
                    Arc::try_unwrap(app).map_err(|_| anyhow::anyhow!("app state shared early"))?;
                a.secure_cookies = tls.is_some()
                    || s.public_url
                        .as_deref()
                        .is_some_and(|u| u.starts_with("https://"));
                a.trust_forwarded = s.trust_forwarded;
                if let Some(d) = &s.ui_dir {
                    if !d.join("index.html").is_file() {
                        bail!(
                            "--ui-dir {}: no index.html there (build the UI: npm --prefix ui run build)",
                            d.display()
                        );
                    }
                    a.ui_dir = Some(d.clone());
                }
                a.public_url = s
                    .public_url
                    .clone()
                    .unwrap_or_else(|| own.clone())
                    .trim_end_matches('/')
                    .to_string();
                a.advertise = Advertise {
                    registration: if s.advertise_registration.is_empty() {
                        vec![own.clone()]
                    } else {
                        s.advertise_registration
                    },
                    session: if s.advertise_session.is_empty() {
                        vec![own.clone()]
                    } else {
                        s.advertise_session
                    },
                };
                Arc::new(a)
            };
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let jobs = tokio::spawn(cvlan_api::jobs::scheduler(
                app.svc.clone(),
                Duration::from_secs(60),
                stop_rx.clone(),
            ));
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!(%listen, ?mode, tls = tls.is_some(), database = %redact(&url), "cvlan-api serving");
            let router = cvlan_api::router(app.clone());
            let srv = tokio::spawn(server::serve(listener, router, tls, stop_rx.clone()));
            let nodes = if s.no_node_listener || mode == Mode::Discovery {
                None
            } else {
                let addr = s
                    .node_listen
                    .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8443)));
                let mut names = s.node_tls_names.clone();
                if names.is_empty() {
                    if !addr.ip().is_unspecified() {
                        names.push(addr.ip().to_string());
                    }
                    names.extend(["localhost".to_string(), "127.0.0.1".to_string()]);
                    names.dedup();
                }
                let tls = app.svc.ca.server_config(&names)?;
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding node listener {addr}"))?;
                tracing::info!(listen = %addr, names = ?names, ca_pin = %app.svc.ca.pin(), "node listener serving");
                let r = cvlan_api::node_router(app.svc.clone(), stop_rx.clone());
                Some(tokio::spawn(server::serve(l, r, Some(tls), stop_rx)))
            };
            server::shutdown_signal().await;
            let _ = stop_tx.send(true);
            srv.await??;
            if let Some(n) = nodes {
                n.await??;
            }
            let _ = jobs.await;
            store.close().await;
            tracing::info!("stopped");
        }
    }
    Ok(())
}
