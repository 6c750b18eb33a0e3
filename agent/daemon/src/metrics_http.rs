//! `--metrics-listen`: a minimal HTTP/1.1 responder for Prometheus scrapes of `GET /metrics`.
//! The exporter crate is used without its HTTP feature (keeps hyper's server out of the
//! agent); a scrape is one request on one connection, which this covers.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves scrapes until dropped. `refresh` runs before each render to update gauges that are
/// read on demand (peer counters).
pub async fn serve(
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: Arc<dyn Fn() + Send + Sync>,
) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let handle = handle.clone();
        let refresh = refresh.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                while n < buf.len() {
                    let m = s.read(&mut buf[n..]).await.ok()?;
                    if m == 0 {
                        return None;
                    }
                    n += m;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            })
            .await;
            if !matches!(head, Ok(Some(()))) {
                return;
            }
            let first = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
            let resp = if first.starts_with(b"GET /metrics ") || first.starts_with(b"GET / ") {
                refresh();
                let body = handle.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .expect("write");
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn a_scrape_renders_the_recorder_after_refreshing_and_other_paths_are_404() {
        let rec = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = rec.handle();
        let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let c = counter.clone();
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let srv = tokio::spawn(async move {
            metrics::with_local_recorder(&rec, || {
                metrics::gauge!("cvlan_agent_peers").set(3.0);
            });
            serve(
                l,
                handle,
                Arc::new(move || {
                    c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }),
            )
            .await;
        });
        let body = get(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("cvlan_agent_peers 3"), "{body}");
        assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        srv.abort();
    }
}
