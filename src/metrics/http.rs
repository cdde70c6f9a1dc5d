//! Serves a node's metrics over HTTP: `GET /metrics` in the Prometheus text format, on one
//! thread of its own, so a scrape never stalls the node's loop.

use super::{Metrics, MetricsError};
use std::sync::Arc;
use std::thread::JoinHandle;

/// The HTTP endpoint; dropping it stops the server thread.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    addr: std::net::SocketAddr,
}

impl MetricsServer {
    pub fn start(addr: &str, metrics: Arc<Metrics>) -> Result<MetricsServer, MetricsError> {
        let server = tiny_http::Server::http(addr).map_err(|e| MetricsError::Listen {
            addr: addr.into(),
            why: e.to_string(),
        })?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| MetricsError::Listen {
                addr: addr.into(),
                why: "not an IP address".into(),
            })?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("ethpaxos-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let _ = answer(request, &metrics);
                }
            })
            .map_err(|e| MetricsError::Listen {
                addr: addr.into(),
                why: e.to_string(),
            })?;
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// Where it listens (the port the system chose, for port 0).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn answer(request: tiny_http::Request, metrics: &Metrics) -> std::io::Result<()> {
    let path = request.url().split('?').next().unwrap_or("").to_string();
    let (status, body, kind) = match (request.method(), path.as_str()) {
        (tiny_http::Method::Get, "/metrics") => (
            200,
            metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        (tiny_http::Method::Get, "/") => (
            200,
            "ethpaxos node: metrics at /metrics\n".to_string(),
            "text/plain; charset=utf-8",
        ),
        (tiny_http::Method::Get, _) => (
            404,
            format!("no {path} here: metrics are at /metrics\n"),
            "text/plain; charset=utf-8",
        ),
        _ => (405, "only GET\n".to_string(), "text/plain; charset=utf-8"),
    };
    request.respond(
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header("Content-Type", kind)),
    )
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
