//! A thin REST client for `/api/v1`: builds URLs from percent-encoded segments, sends the
//! bearer token, and turns `{"error":{"message":…}}` bodies into errors carrying that message.

use anyhow::{Context, Result, anyhow, bail};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Talks to one server with one (optional) credential.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A failed call as the server described it.
#[derive(Debug)]
pub struct ServerError {
    /// HTTP status.
    pub status: StatusCode,
    /// The server's message (or the status text when the body had none).
    pub message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        // A refused login already says what to fix; other 401s mean "sign in".
        if self.status == StatusCode::UNAUTHORIZED
            && !self.message.starts_with("invalid email or password")
        {
            f.write_str(" (run `cvlanctl login` or pass --token / CVLANCTL_TOKEN)")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServerError {}

impl Client {
    /// A client for `server` (`http://host:port`, optionally with a path prefix).
    ///
    /// # Errors
    /// Unparseable URLs or non-HTTP schemes.
    pub fn new(server: &str, token: Option<String>) -> Result<Self> {
        let base = Url::parse(server).with_context(|| {
            format!("server {server:?} is not a URL like http://127.0.0.1:8080")
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            bail!("server {server:?} must be an http:// or https:// URL");
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("cvlanctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .timeout(std::time::Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// The server URL this client talks to.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `base` + `/api/v1/` + each segment percent-encoded (so names cannot change the path).
    fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Url> {
        let mut u = self.base.clone();
        {
            let mut p = u
                .path_segments_mut()
                .map_err(|()| anyhow!("server URL cannot take a path"))?;
            p.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            u.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        Ok(u)
    }

    async fn send(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let url = self.url(segments, query)?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| {
            let mut msg = format!("cannot reach {}", self.server());
            let mut src: Option<&dyn std::error::Error> = Some(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            anyhow!(msg)
        })?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let text = res.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .and_then(Value::as_str)
                    .map(String::from)
            })
            .unwrap_or_else(|| {
                let t = text.trim();
                if t.is_empty() || t.len() > 500 {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {t}")
                }
            });
        Err(ServerError { status, message }.into())
    }

    /// Sends a request and parses a JSON response; `Value::Null` for empty (204) responses.
    ///
    /// # Errors
    /// Transport failures, error statuses (with the server's message), non-JSON bodies.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value> {
        let res = self.send(method, segments, query, body).await?;
        let bytes = res.bytes().await.context("reading the response")?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).context("the server's response is not JSON")
    }

    /// Sends a GET and returns the body as text (exports).
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn text(&self, segments: &[&str], query: &[(&str, String)]) -> Result<String> {
        let res = self.send(Method::GET, segments, query, None).await?;
        res.text().await.context("reading the response")
    }

    /// GET.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value> {
        self.call(Method::GET, segments, query, None).await
    }

    /// POST with a JSON body.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::POST, segments, &[], Some(body)).await
    }

    /// PATCH with a JSON body holding only the fields to change.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn patch(&self, segments: &[&str], body: &Value) -> Result<Value> {
        self.call(Method::PATCH, segments, &[], Some(body)).await
    }

    /// DELETE.
    ///
    /// # Errors
    /// As [`Client::call`].
    pub async fn delete(&self, segments: &[&str]) -> Result<Value> {
        self.call(Method::DELETE, segments, &[], None).await
    }

    /// GETs a list page, or every page when `all` (following `nextPageToken`).
    ///
    /// # Errors
    /// As [`Client::call`]; a response without `items`.
    pub async fn list(
        &self,
        segments: &[&str],
        mut query: Vec<(&str, String)>,
        all: bool,
    ) -> Result<Value> {
        let mut items = Vec::new();
        loop {
            let mut page = self.get(segments, &query).await?;
            let next = page
                .get("nextPageToken")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match page.get_mut("items").map(Value::take) {
                Some(Value::Array(v)) => items.extend(v),
                Some(Value::Null) | None => {}
                Some(_) => bail!("the server's list response has no items array"),
            }
            if !all || next.is_empty() {
                return Ok(serde_json::json!({"items": items, "nextPageToken": next}));
            }
            query.retain(|(k, _)| *k != "pageToken");
            query.push(("pageToken", next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        let c = Client::new("http://127.0.0.1:8080", None).unwrap();
        let u = c.url(&["tenants", "a/b c?", "cvlans"], &[]).unwrap();
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8080/api/v1/tenants/a%2Fb%20c%3F/cvlans"
        );
    }

    #[test]
    fn a_server_path_prefix_is_kept() {
        let c = Client::new("https://example.test/cvlan/", None).unwrap();
        let u = c
            .url(&["audit"], &[("since", "2026-01-01T00:00:00Z".into())])
            .unwrap();
        assert_eq!(
            u.as_str(),
            "https://example.test/cvlan/api/v1/audit?since=2026-01-01T00%3A00%3A00Z"
        );
    }

    #[test]
    fn servers_must_be_http_urls() {
        assert!(Client::new("127.0.0.1:8080", None).is_err());
        assert!(Client::new("ftp://x", None).is_err());
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let c = Client::new("http://x", Some("cvk_secret".into())).unwrap();
        assert!(!format!("{c:?}").contains("cvk_secret"));
    }
}
