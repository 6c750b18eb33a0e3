//! What each NOUN VERB does: build the request body, call the route, print the result.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use crate::cli::{
    AddressCmd, AuditCmd, AuditFilter, Cli, Cmd, CvlanCmd, ExportFormat, ExternalPeerCmd, GroupCmd,
    NodeCmd, Output, Paging, PolicyCmd, RegionCmd, RelayCmd, Secret, SsoCmd, SsoSettings,
    TenantCmd, TokenCmd, UserCmd, VrouterCmd,
};
use crate::client::Client;
use crate::config;
use crate::output::{self, Noun};

/// A command line the server never saw because it makes no sense; exits with status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(UsageError(msg.into()).into())
}

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// A JSON object built from the fields that were given; PATCH bodies hold nothing else.
#[derive(Default)]
struct Fields(Map<String, Value>);

impl Fields {
    fn set(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.0.insert(k.into(), v.into());
        self
    }
    fn opt(self, k: &str, v: Option<impl Into<Value>>) -> Self {
        match v {
            Some(v) => self.set(k, v),
            None => self,
        }
    }
    /// Sets a list when any items were given, or an empty one when `clear`.
    fn list(self, k: &str, items: Vec<Value>, clear: bool) -> Self {
        if items.is_empty() && !clear {
            self
        } else {
            self.set(k, items)
        }
    }
    /// For updates: refuses an empty change.
    fn patch(self, flags: &str) -> Result<Value> {
        if self.0.is_empty() {
            return usage(format!("nothing to update; give at least one of {flags}"));
        }
        Ok(Value::Object(self.0))
    }
    fn body(self) -> Value {
        Value::Object(self.0)
    }
}

fn paging_query(p: &Paging) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    if let Some(n) = p.page_size {
        q.push(("pageSize", n.to_string()));
    }
    if let Some(t) = &p.page_token {
        q.push(("pageToken", t.clone()));
    }
    q
}

fn strings(v: Vec<String>) -> Vec<Value> {
    v.into_iter().map(Value::from).collect()
}

/// Everything a command needs: where to send it and how to print.
struct Ctx {
    client: Client,
    out: Output,
    config_path: std::path::PathBuf,
    config: config::Config,
}

impl Ctx {
    async fn list(&self, noun: Noun, path: &[&str], paging: &Paging) -> Result<()> {
        let page = self
            .client
            .list(path, paging_query(paging), paging.all)
            .await?;
        output::list(self.out, noun, &page);
        Ok(())
    }
    async fn get(&self, noun: Noun, path: &[&str]) -> Result<()> {
        let v = self.client.get(path, &[]).await?;
        output::one(self.out, noun, &v);
        Ok(())
    }
    async fn create(&self, noun: Noun, path: &[&str], body: Value) -> Result<()> {
        let v = self.client.post(path, &body).await?;
        output::one(self.out, noun, &v);
        Ok(())
    }
    async fn update(&self, noun: Noun, path: &[&str], body: Value) -> Result<()> {
        let v = self.client.patch(path, &body).await?;
        output::one(self.out, noun, &v);
        Ok(())
    }
    async fn delete(&self, noun: Noun, path: &[&str], what: &str) -> Result<()> {
        self.client.delete(path).await?;
        if self.out == Output::Table {
            output::emit(&format!("Deleted {} {what}.\n", noun.word()));
        }
        Ok(())
    }
}

/// Runs one command line.
///
/// # Errors
/// [`UsageError`] for contradictory arguments; otherwise transport, server and file errors.
pub async fn run(cli: Cli) -> Result<()> {
    let config_path = config::path()?;
    let cfg = config::load(&config_path)?;
    let server = cli
        .server
        .clone()
        .or_else(|| cfg.server.clone())
        .or_else(|| {
            std::env::var("CVLANCTL_SERVER")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| DEFAULT_SERVER.into());
    // A stored session only belongs to the server it was made on.
    let stored = cfg
        .token
        .clone()
        .filter(|_| cfg.server.as_deref().is_none_or(|s| s == server));
    let token = cli
        .token
        .as_ref()
        .map(|t| t.0.clone())
        .filter(|t| !t.is_empty())
        .or(stored);
    let ctx = Ctx {
        client: Client::new(&server, token)?,
        out: cli.output,
        config_path,
        config: cfg,
    };
    match cli.cmd {
        Cmd::Login { email, password } => login(ctx, server, email, password).await,
        Cmd::Logout => logout(ctx).await,
        Cmd::Whoami => whoami(&ctx).await,
        Cmd::Tenant(c) => tenant(&ctx, c).await,
        Cmd::Cvlan(c) => cvlan(&ctx, c).await,
        Cmd::User(c) => user(&ctx, c).await,
        Cmd::Group(c) => group(&ctx, c).await,
        Cmd::Policy(c) => policy(&ctx, c).await,
        Cmd::Node(c) => node(&ctx, c).await,
        Cmd::ExternalPeer(c) => external_peer(&ctx, c).await,
        Cmd::Sso(c) => sso(&ctx, c).await,
        Cmd::Token(c) => token_cmd(&ctx, c).await,
        Cmd::Vrouter(c) => vrouter(&ctx, c).await,
        Cmd::Region(c) => region(&ctx, c).await,
        Cmd::Relay(c) => relay(&ctx, c).await,
        Cmd::Address(c) => address(&ctx, c).await,
        Cmd::Audit(c) => audit(&ctx, c).await,
    }
}

async fn login(ctx: Ctx, server: String, email: String, password: Secret) -> Result<()> {
    let anon = Client::new(&server, None)?;
    let mut res = anon
        .post(
            &["auth", "login"],
            &json!({"email": email, "password": password.0}),
        )
        .await?;
    let Some(token) = res.get("token").and_then(Value::as_str).map(String::from) else {
        bail!("the server's login response has no token");
    };
    let cfg = config::Config {
        server: Some(server.clone()),
        token: Some(token),
        email: Some(email.clone()),
    };
    config::save(&ctx.config_path, &cfg)?;
    if let Some(o) = res.as_object_mut() {
        o.remove("token");
    }
    match ctx.out {
        Output::Json => output::json(&res),
        Output::Table => {
            let role = res
                .pointer("/user/role")
                .and_then(Value::as_str)
                .unwrap_or("");
            let role = role
                .strip_prefix("ROLE_")
                .unwrap_or(role)
                .to_ascii_lowercase()
                .replace('_', "-");
            let exp = res.get("expiresAt").and_then(Value::as_str).unwrap_or("?");
            output::emit(&format!(
                "Logged in to {server} as {email} ({role}); session saved in {} until {exp}.\n",
                ctx.config_path.display()
            ));
        }
    }
    Ok(())
}

async fn logout(ctx: Ctx) -> Result<()> {
    let mut cfg = ctx.config.clone();
    let Some(token) = cfg.token.take() else {
        output::emit("Not logged in.\n");
        return Ok(());
    };
    let server = cfg.server.clone().unwrap_or_else(|| DEFAULT_SERVER.into());
    // Forget the token locally even when the server cannot be told (expired session, offline).
    let told = Client::new(&server, Some(token))?
        .call(reqwest::Method::POST, &["auth", "logout"], &[], None)
        .await;
    cfg.email = None;
    config::save(&ctx.config_path, &cfg)?;
    match told {
        Ok(_) => output::emit(&format!("Logged out of {server}.\n")),
        Err(e) => {
            eprintln!("warning: the server did not confirm the logout: {e:#}");
            output::emit("Forgot the saved session.\n");
        }
    }
    Ok(())
}

async fn whoami(ctx: &Ctx) -> Result<()> {
    let v = ctx.client.get(&["auth", "whoami"], &[]).await?;
    if ctx.out == Output::Json {
        output::json(&v);
        return Ok(());
    }
    let user = v.get("user").cloned().unwrap_or(Value::Null);
    let mut t = output::detail(Noun::User, &user);
    t.add_row(["SERVER".to_string(), ctx.client.server().to_string()]);
    if let Some(k) = v
        .get("apiKeyId")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
    {
        t.add_row(["API KEY".to_string(), k.to_string()]);
    }
    output::emit(&output::render(&t));
    Ok(())
}

async fn tenant(ctx: &Ctx, c: TenantCmd) -> Result<()> {
    const N: Noun = Noun::Tenant;
    match c {
        TenantCmd::List { paging } => ctx.list(N, &["tenants"], &paging).await,
        TenantCmd::Get { tenant } => ctx.get(N, &["tenants", &tenant]).await,
        TenantCmd::Create { name, display_name } => {
            ctx.create(
                N,
                &["tenants"],
                Fields::default()
                    .set("name", name)
                    .opt("displayName", display_name)
                    .body(),
            )
            .await
        }
        TenantCmd::Update {
            tenant,
            display_name,
        } => {
            let body = Fields::default()
                .opt("displayName", display_name)
                .patch("--display-name")?;
            ctx.update(N, &["tenants", &tenant], body).await
        }
        TenantCmd::Delete { tenant } => ctx.delete(N, &["tenants", &tenant], &tenant).await,
    }
}

async fn cvlan(ctx: &Ctx, c: CvlanCmd) -> Result<()> {
    const N: Noun = Noun::Cvlan;
    match c {
        CvlanCmd::List { t, paging } => {
            ctx.list(N, &["tenants", &t.tenant, "cvlans"], &paging)
                .await
        }
        CvlanCmd::Get { t, cvlan } => ctx.get(N, &["tenants", &t.tenant, "cvlans", &cvlan]).await,
        CvlanCmd::Create {
            t,
            name,
            ipv4,
            ipv6,
            mode,
            description,
        } => {
            let body = Fields::default()
                .set("name", name)
                .set("ipv4Prefix", ipv4)
                .opt("ipv6Prefix", ipv6)
                .opt("mode", mode)
                .opt("description", description)
                .body();
            ctx.create(N, &["tenants", &t.tenant, "cvlans"], body).await
        }
        CvlanCmd::Update {
            t,
            cvlan,
            rename,
            description,
            mode,
        } => {
            let body = Fields::default()
                .opt("name", rename)
                .opt("description", description)
                .opt("mode", mode)
                .patch("--rename, --description, --mode")?;
            ctx.update(N, &["tenants", &t.tenant, "cvlans", &cvlan], body)
                .await
        }
        CvlanCmd::Delete { t, cvlan } => {
            ctx.delete(N, &["tenants", &t.tenant, "cvlans", &cvlan], &cvlan)
                .await
        }
    }
}

/// `/users` (superadmins) or `/tenants/T/users`.
fn users_path(tenant: Option<&str>) -> Vec<&str> {
    match tenant {
        Some(t) => vec!["tenants", t, "users"],
        None => vec!["users"],
    }
}

async fn user(ctx: &Ctx, c: UserCmd) -> Result<()> {
    const N: Noun = Noun::User;
    match c {
        UserCmd::List { tenant, paging } => {
            ctx.list(N, &users_path(tenant.as_deref()), &paging).await
        }
        UserCmd::Get { tenant, user } => {
            let mut p = users_path(tenant.as_deref());
            p.push(&user);
            ctx.get(N, &p).await
        }
        UserCmd::Create {
            tenant,
            email,
            password,
            role,
            display_name,
        } => {
            match (tenant.is_some(), role == "ROLE_SUPERADMIN") {
                (true, true) => {
                    return usage("superadmins belong to no tenant; drop --tenant to create one");
                }
                (false, false) => {
                    return usage("--tenant is required for every role but superadmin");
                }
                _ => {}
            }
            let body = Fields::default()
                .set("email", email)
                .set("password", password.0)
                .set("role", role)
                .opt("displayName", display_name)
                .body();
            ctx.create(N, &users_path(tenant.as_deref()), body).await
        }
        UserCmd::Update {
            tenant,
            user,
            role,
            password,
            display_name,
        } => {
            let body = Fields::default()
                .opt("role", role)
                .opt("password", password.map(|p| p.0))
                .opt("displayName", display_name)
                .patch("--role, --password, --display-name")?;
            let mut p = users_path(tenant.as_deref());
            p.push(&user);
            ctx.update(N, &p, body).await
        }
        UserCmd::Delete { tenant, user } => {
            let mut p = users_path(tenant.as_deref());
            p.push(&user);
            ctx.delete(N, &p, &user).await
        }
    }
}

async fn group(ctx: &Ctx, c: GroupCmd) -> Result<()> {
    const N: Noun = Noun::Group;
    match c {
        GroupCmd::List { t, paging } => {
            ctx.list(N, &["tenants", &t.tenant, "groups"], &paging)
                .await
        }
        GroupCmd::Get { t, group } => ctx.get(N, &["tenants", &t.tenant, "groups", &group]).await,
        GroupCmd::Create {
            t,
            name,
            description,
            members,
        } => {
            let body = Fields::default()
                .set("name", name)
                .opt("description", description)
                .list("members", members, false)
                .body();
            ctx.create(N, &["tenants", &t.tenant, "groups"], body).await
        }
        GroupCmd::Update {
            t,
            group,
            rename,
            description,
            members,
            no_members,
        } => {
            let body = Fields::default()
                .opt("name", rename)
                .opt("description", description)
                .list("members", members, no_members)
                .patch("--rename, --description, --member, --no-members")?;
            ctx.update(N, &["tenants", &t.tenant, "groups", &group], body)
                .await
        }
        GroupCmd::Delete { t, group } => {
            ctx.delete(N, &["tenants", &t.tenant, "groups", &group], &group)
                .await
        }
    }
}

async fn policy(ctx: &Ctx, c: PolicyCmd) -> Result<()> {
    const N: Noun = Noun::Policy;
    match c {
        PolicyCmd::List { t, paging } => {
            ctx.list(N, &["tenants", &t.tenant, "policies"], &paging)
                .await
        }
        PolicyCmd::Get { t, policy } => {
            ctx.get(N, &["tenants", &t.tenant, "policies", &policy])
                .await
        }
        PolicyCmd::Create {
            t,
            name,
            rules,
            priority,
            description,
        } => {
            let body = Fields::default()
                .set("name", name)
                .opt("priority", priority)
                .opt("description", description)
                .list("rules", rules, false)
                .body();
            ctx.create(N, &["tenants", &t.tenant, "policies"], body)
                .await
        }
        PolicyCmd::Update {
            t,
            policy,
            rename,
            rules,
            priority,
            description,
        } => {
            let body = Fields::default()
                .opt("name", rename)
                .opt("priority", priority)
                .opt("description", description)
                .list("rules", rules, false)
                .patch("--rename, --rule, --priority, --description")?;
            ctx.update(N, &["tenants", &t.tenant, "policies", &policy], body)
                .await
        }
        PolicyCmd::Delete { t, policy } => {
            ctx.delete(N, &["tenants", &t.tenant, "policies", &policy], &policy)
                .await
        }
    }
}

async fn node(ctx: &Ctx, c: NodeCmd) -> Result<()> {
    const N: Noun = Noun::Node;
    match c {
        NodeCmd::List { t, paging } => ctx.list(N, &["tenants", &t.tenant, "nodes"], &paging).await,
        NodeCmd::Get { t, node } => ctx.get(N, &["tenants", &t.tenant, "nodes", &node]).await,
        NodeCmd::Update {
            t,
            node,
            rename,
            tags,
            no_tags,
        } => {
            let body = Fields::default()
                .opt("name", rename)
                .list("tags", strings(tags), no_tags)
                .patch("--rename, --tag, --no-tags")?;
            ctx.update(N, &["tenants", &t.tenant, "nodes", &node], body)
                .await
        }
        NodeCmd::Delete { t, node } => {
            ctx.delete(N, &["tenants", &t.tenant, "nodes", &node], &node)
                .await
        }
        NodeCmd::Expire { t, node } => {
            ctx.create(
                N,
                &["tenants", &t.tenant, "nodes", &node, "expire"],
                Value::Object(Default::default()),
            )
            .await
        }
    }
}

async fn external_peer(ctx: &Ctx, c: ExternalPeerCmd) -> Result<()> {
    const N: Noun = Noun::ExternalPeer;
    match c {
        ExternalPeerCmd::List { t, paging } => {
            ctx.list(N, &["tenants", &t.tenant, "external-peers"], &paging)
                .await
        }
        ExternalPeerCmd::Get { t, peer } => {
            ctx.get(N, &["tenants", &t.tenant, "external-peers", &peer])
                .await
        }
        ExternalPeerCmd::Create {
            c,
            name,
            public_key,
            allowed_ips,
            endpoint,
            keepalive,
            nodes,
            description,
        } => {
            let body = Fields::default()
                .set("name", name)
                .set("wgPublicKey", public_key)
                .list("allowedIps", strings(allowed_ips), false)
                .opt("endpoint", endpoint)
                .opt("persistentKeepaliveSeconds", keepalive)
                .list("nodeIds", strings(nodes), false)
                .opt("description", description)
                .body();
            ctx.create(
                N,
                &["tenants", &c.tenant, "cvlans", &c.cvlan, "external-peers"],
                body,
            )
            .await
        }
        ExternalPeerCmd::Update {
            t,
            peer,
            endpoint,
            allowed_ips,
            keepalive,
            nodes,
            all_nodes,
        } => {
            let body = Fields::default()
                .opt("endpoint", endpoint)
                .list("allowedIps", strings(allowed_ips), false)
                .opt("persistentKeepaliveSeconds", keepalive)
                .list("nodeIds", strings(nodes), all_nodes)
                .patch("--endpoint, --allowed-ip, --keepalive, --node, --all-nodes")?;
            ctx.update(N, &["tenants", &t.tenant, "external-peers", &peer], body)
                .await
        }
        ExternalPeerCmd::Delete { t, peer } => {
            ctx.delete(N, &["tenants", &t.tenant, "external-peers", &peer], &peer)
                .await
        }
    }
}

/// Adds the settings given on the command line to an SSO provider body.
fn sso_fields(mut f: Fields, s: SsoSettings) -> Result<Fields> {
    if s.client_secret_from_env {
        match std::env::var("CVLAN_SSO_CLIENT_SECRET") {
            Ok(v) if !v.is_empty() => f = f.set("clientSecret", v),
            _ => return usage("--client-secret-from-env: CVLAN_SSO_CLIENT_SECRET is not set"),
        }
    }
    let maps: Vec<Value> = s
        .mappings
        .into_iter()
        .map(|(c, g)| serde_json::json!({"claimValue": c, "group": g}))
        .collect();
    Ok(f.opt("displayName", s.display_name)
        .list("allowedDomains", strings(s.allowed_domains), false)
        .opt("groupsClaim", s.groups_claim)
        .list("groupMappings", maps, false)
        .opt("defaultRole", s.default_role)
        .list("scopes", strings(s.scopes), false))
}

async fn sso(ctx: &Ctx, c: SsoCmd) -> Result<()> {
    const N: Noun = Noun::Sso;
    match c {
        SsoCmd::List { t, paging } => {
            ctx.list(N, &["tenants", &t.tenant, "oidc-providers"], &paging)
                .await
        }
        SsoCmd::Get { t, provider } => {
            ctx.get(N, &["tenants", &t.tenant, "oidc-providers", &provider])
                .await
        }
        SsoCmd::Create {
            t,
            name,
            issuer,
            client_id,
            s,
            disabled,
        } => {
            let f = Fields::default()
                .set("name", name)
                .set("issuer", issuer)
                .set("clientId", client_id)
                .set("enabled", !disabled);
            let body = sso_fields(f, s)?.body();
            ctx.create(N, &["tenants", &t.tenant, "oidc-providers"], body)
                .await
        }
        SsoCmd::Update {
            t,
            provider,
            issuer,
            client_id,
            s,
            enable,
            disable,
        } => {
            let f = Fields::default()
                .opt("issuer", issuer)
                .opt("clientId", client_id)
                .opt("enabled", (enable || disable).then_some(enable));
            let body = sso_fields(f, s)?.patch(
                "--issuer, --client-id, --client-secret-from-env, --display-name, --allowed-domain, \
                 --groups-claim, --map, --default-role, --scope, --enable, --disable",
            )?;
            ctx.update(
                N,
                &["tenants", &t.tenant, "oidc-providers", &provider],
                body,
            )
            .await
        }
        SsoCmd::Delete { t, provider } => {
            ctx.delete(
                N,
                &["tenants", &t.tenant, "oidc-providers", &provider],
                &provider,
            )
            .await
        }
    }
}

async fn token_cmd(ctx: &Ctx, c: TokenCmd) -> Result<()> {
    const N: Noun = Noun::Token;
    match c {
        TokenCmd::List { t, paging } => {
            ctx.list(N, &["tenants", &t.tenant, "tokens"], &paging)
                .await
        }
        TokenCmd::Get { t, id } => ctx.get(N, &["tenants", &t.tenant, "tokens", &id]).await,
        TokenCmd::Create {
            t,
            cvlan,
            reusable,
            ephemeral,
            expires,
            tags,
            description,
        } => {
            let body = Fields::default()
                .set("cvlanId", cvlan)
                .set("reusable", reusable)
                .set("ephemeral", ephemeral)
                .set("tags", strings(tags))
                .opt("ttlSeconds", expires)
                .opt("description", description)
                .body();
            let v = ctx
                .client
                .post(&["tenants", &t.tenant, "tokens"], &body)
                .await?;
            if ctx.out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let secret = v.get("token").and_then(Value::as_str).unwrap_or("");
            output::emit(&format!(
                "{}\nRegistration token (shown only once; store it now):\n\n    {secret}\n\n",
                output::render(&output::detail(N, &v))
            ));
            Ok(())
        }
        TokenCmd::Revoke { t, id } => {
            let v = ctx
                .client
                .call(
                    reqwest::Method::POST,
                    &["tenants", &t.tenant, "tokens", &id, "revoke"],
                    &[],
                    None,
                )
                .await?;
            match ctx.out {
                Output::Json => output::json(&v),
                Output::Table => output::emit(&format!("Revoked token {id}.\n")),
            }
            Ok(())
        }
        TokenCmd::Delete { t, id } => {
            ctx.delete(N, &["tenants", &t.tenant, "tokens", &id], &id)
                .await
        }
    }
}

/// Assignments name tenants and CVLANs by id on the wire; accept names here.
async fn assignments(ctx: &Ctx, assign: Vec<(String, Option<String>)>) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(assign.len());
    for (t, c) in assign {
        let ten = ctx
            .client
            .get(&["tenants", &t], &[])
            .await
            .with_context(|| format!("tenant {t:?}"))?;
        let tid = ten
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let mut a = Fields::default().set("tenantId", tid.clone());
        if let Some(c) = c {
            let cv = ctx
                .client
                .get(&["tenants", &tid, "cvlans", &c], &[])
                .await
                .with_context(|| format!("cvlan {c:?} of tenant {t:?}"))?;
            a = a.set(
                "cvlanId",
                cv.get("id").and_then(Value::as_str).unwrap_or_default(),
            );
        }
        out.push(a.body());
    }
    Ok(out)
}

/// The id of a region given by name or id. The server checks that a region exists but stores
/// whatever key it was given, so a name would not count as a use when the region is deleted.
async fn region_id(ctx: &Ctx, region: Option<String>) -> Result<Option<String>> {
    let Some(r) = region else {
        return Ok(None);
    };
    if r.is_empty() {
        return Ok(Some(r));
    }
    let v = ctx
        .client
        .get(&["regions", &r], &[])
        .await
        .with_context(|| format!("region {r:?}"))?;
    Ok(Some(
        v.get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    ))
}

async fn vrouter(ctx: &Ctx, c: VrouterCmd) -> Result<()> {
    const N: Noun = Noun::Vrouter;
    match c {
        VrouterCmd::List { paging } => ctx.list(N, &["vrouters"], &paging).await,
        VrouterCmd::Get { vrouter } => ctx.get(N, &["vrouters", &vrouter]).await,
        VrouterCmd::Create {
            name,
            region,
            endpoint,
            public_key,
            assign,
        } => {
            let body = Fields::default()
                .set("name", name)
                .opt("regionId", region_id(ctx, region).await?)
                .opt("endpoint", endpoint)
                .opt("wgPublicKey", public_key)
                .list("assignments", assignments(ctx, assign).await?, false)
                .body();
            ctx.create(N, &["vrouters"], body).await
        }
        VrouterCmd::Update {
            vrouter,
            rename,
            region,
            endpoint,
            public_key,
            assign,
            no_assignments,
        } => {
            let body = Fields::default()
                .opt("name", rename)
                .opt("regionId", region_id(ctx, region).await?)
                .opt("endpoint", endpoint)
                .opt("wgPublicKey", public_key)
                .list(
                    "assignments",
                    assignments(ctx, assign).await?,
                    no_assignments,
                )
                .patch(
                    "--rename, --region, --endpoint, --public-key, --assign, --no-assignments",
                )?;
            ctx.update(N, &["vrouters", &vrouter], body).await
        }
        VrouterCmd::Delete { vrouter } => ctx.delete(N, &["vrouters", &vrouter], &vrouter).await,
        VrouterCmd::JoinToken { vrouter, ttl } => {
            let body = Fields::default().opt("ttlSeconds", ttl).body();
            let v = ctx
                .client
                .post(&["vrouters", &vrouter, "join-tokens"], &body)
                .await?;
            if ctx.out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let secret = v.get("token").and_then(Value::as_str).unwrap_or("");
            output::emit(&format!("{secret}\n"));
            let exp = v.get("expiresAt").and_then(Value::as_str).unwrap_or("");
            eprintln!(
                "join token for vrouter {vrouter} (single use, expires {exp}; shown only once)"
            );
            Ok(())
        }
    }
}

async fn region(ctx: &Ctx, c: RegionCmd) -> Result<()> {
    const N: Noun = Noun::Region;
    match c {
        RegionCmd::List { paging } => ctx.list(N, &["regions"], &paging).await,
        RegionCmd::Get { region } => ctx.get(N, &["regions", &region]).await,
        RegionCmd::Create { name, description } => {
            ctx.create(
                N,
                &["regions"],
                Fields::default()
                    .set("name", name)
                    .opt("description", description)
                    .body(),
            )
            .await
        }
        RegionCmd::Update {
            region,
            rename,
            description,
        } => {
            let body = Fields::default()
                .opt("name", rename)
                .opt("description", description)
                .patch("--rename, --description")?;
            ctx.update(N, &["regions", &region], body).await
        }
        RegionCmd::Delete { region } => ctx.delete(N, &["regions", &region], &region).await,
    }
}

async fn relay(ctx: &Ctx, c: RelayCmd) -> Result<()> {
    const N: Noun = Noun::Relay;
    match c {
        RelayCmd::List { paging } => ctx.list(N, &["relays"], &paging).await,
        RelayCmd::Get { relay } => ctx.get(N, &["relays", &relay]).await,
        RelayCmd::Create {
            name,
            region,
            endpoint,
        } => {
            let body = Fields::default()
                .set("name", name)
                .opt("regionId", region_id(ctx, region).await?)
                .set("endpoint", endpoint)
                .body();
            ctx.create(N, &["relays"], body).await
        }
        RelayCmd::Update {
            relay,
            rename,
            region,
            endpoint,
        } => {
            let body = Fields::default()
                .opt("name", rename)
                .opt("regionId", region_id(ctx, region).await?)
                .opt("endpoint", endpoint)
                .patch("--rename, --region, --endpoint")?;
            ctx.update(N, &["relays", &relay], body).await
        }
        RelayCmd::Delete { relay } => ctx.delete(N, &["relays", &relay], &relay).await,
    }
}

async fn address(ctx: &Ctx, c: AddressCmd) -> Result<()> {
    const N: Noun = Noun::Address;
    match c {
        AddressCmd::List { c, paging } => {
            ctx.list(
                N,
                &["tenants", &c.tenant, "cvlans", &c.cvlan, "addresses"],
                &paging,
            )
            .await
        }
        AddressCmd::Get { c, address } => {
            ctx.get(
                N,
                &[
                    "tenants",
                    &c.tenant,
                    "cvlans",
                    &c.cvlan,
                    "addresses",
                    &address,
                ],
            )
            .await
        }
        AddressCmd::Create { c, ip, description } => {
            let body = Fields::default()
                .opt("address", ip)
                .opt("description", description)
                .body();
            ctx.create(
                N,
                &["tenants", &c.tenant, "cvlans", &c.cvlan, "addresses"],
                body,
            )
            .await
        }
        AddressCmd::Delete { c, address } => {
            ctx.delete(
                N,
                &[
                    "tenants",
                    &c.tenant,
                    "cvlans",
                    &c.cvlan,
                    "addresses",
                    &address,
                ],
                &address,
            )
            .await
        }
    }
}

fn audit_query(f: &AuditFilter) -> Vec<(&'static str, String)> {
    let mut q = Vec::new();
    for (k, v) in [
        ("action", &f.action),
        ("actorId", &f.actor),
        ("targetType", &f.target_type),
        ("targetId", &f.target_id),
        ("since", &f.since),
        ("until", &f.until),
    ] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    q
}

fn audit_path<'a>(tenant: Option<&'a str>, tail: Option<&'static str>) -> Vec<&'a str> {
    let mut p = match tenant {
        Some(t) => vec!["tenants", t, "audit"],
        None => vec!["audit"],
    };
    p.extend(tail);
    p
}

async fn audit(ctx: &Ctx, c: AuditCmd) -> Result<()> {
    match c {
        AuditCmd::List { filter, paging } => {
            let mut q = audit_query(&filter);
            q.extend(paging_query(&paging));
            let page = ctx
                .client
                .list(&audit_path(filter.tenant.as_deref(), None), q, paging.all)
                .await?;
            output::list(ctx.out, Noun::Audit, &page);
            Ok(())
        }
        AuditCmd::Export {
            filter,
            format,
            file,
        } => {
            let mut q = audit_query(&filter);
            q.push((
                "format",
                match format {
                    ExportFormat::Jsonl => "jsonl",
                    ExportFormat::Csv => "csv",
                }
                .into(),
            ));
            let body = ctx
                .client
                .text(&audit_path(filter.tenant.as_deref(), Some("export")), &q)
                .await?;
            match file {
                Some(path) => {
                    std::fs::write(&path, body.as_bytes())
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "Wrote {} event(s) to {}.",
                        audit_lines(&body, format),
                        path.display()
                    );
                }
                None => output::emit(&body),
            }
            Ok(())
        }
    }
}

/// Events in an export (CSV rows may span lines when a field holds a newline; close enough for
/// a message, exact for summaries the server writes as single-line JSON).
fn audit_lines(body: &str, format: ExportFormat) -> usize {
    let lines = body.lines().filter(|l| !l.is_empty()).count();
    match format {
        ExportFormat::Jsonl => lines,
        ExportFormat::Csv => lines.saturating_sub(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_bodies_hold_only_the_fields_given() {
        let b = Fields::default()
            .opt("name", None::<String>)
            .opt("description", Some("x"))
            .list("tags", vec![], false)
            .patch("--x")
            .unwrap();
        assert_eq!(b, json!({"description": "x"}));
    }

    #[test]
    fn an_update_without_fields_is_a_usage_error() {
        let e = Fields::default()
            .opt("name", None::<String>)
            .patch("--rename")
            .unwrap_err();
        assert!(e.downcast_ref::<UsageError>().is_some());
    }

    #[test]
    fn clearing_a_list_sends_an_empty_list() {
        let b = Fields::default()
            .list("tags", vec![], true)
            .patch("--tag")
            .unwrap();
        assert_eq!(b, json!({"tags": []}));
    }

    #[test]
    fn audit_paths_are_tenant_scoped_or_global() {
        assert_eq!(audit_path(Some("acme"), None), ["tenants", "acme", "audit"]);
        assert_eq!(audit_path(None, Some("export")), ["audit", "export"]);
    }
}
