//! Metrics against the real parts: a cluster of node processes on loopback UDP under client
//! load (replica 3 on the staged pipeline), `promtool check metrics` on every node's
//! /metrics, and a real Prometheus server scraping them all, asked through its HTTP API for
//! every expression of config/grafana/ethpaxos.json: each must return data. Needs
//! `prometheus` and `promtool` (Debian's prometheus package), so it is `#[ignore]`d:
//! `cargo test --release -- --ignored` runs it (.ci/run installs the package and does).

mod common;

use common::cluster::{LoopNode, Loopback, ProcCluster};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Processes besides the cluster's (Prometheus), gone when dropped.
struct Running {
    children: Vec<Child>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A free loopback TCP port.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// HTTP/1.0 GET: (status, body).
fn get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every PromQL expression of the dashboard.
fn dashboard_exprs() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/ethpaxos.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            exprs.push(t["expr"].as_str().unwrap().to_string());
        }
    }
    exprs
}

/// Replicas 1-3 (3 on the staged pipeline) and a client node (9), each serving metrics on
/// its port of `metrics`.
fn start_cluster(metrics: &[(u16, u16)]) -> ProcCluster<Loopback> {
    let nodes = metrics
        .iter()
        .map(|(id, port)| {
            let roles = if *id <= 3 {
                "[replica]"
            } else {
                "[learner, client]"
            };
            let mut n =
                LoopNode::new(*id, roles).with(format!("metrics_address: \"127.0.0.1:{port}\"\n"));
            if *id == 3 {
                n = n.with("pipeline: {stages: staged}\n");
            }
            if *id == 9 {
                n = n.with("load: {clients: 8, outstanding: 2}\n");
            }
            n
        })
        .collect();
    let mut c = ProcCluster::start_all(Loopback::new("metrics", nodes));
    c.patience = Duration::from_secs(60);
    c
}

#[test]
#[ignore = "needs prometheus and promtool (apt-get install prometheus; .ci/run installs and runs it)"]
fn every_dashboard_query_returns_data_from_a_real_prometheus() {
    assert!(
        have("prometheus") && have("promtool"),
        "needs prometheus and promtool: apt-get install prometheus"
    );
    let metrics: Vec<(u16, u16)> = [1u16, 2, 3, 9]
        .iter()
        .map(|id| (*id, free_tcp_port()))
        .collect();
    let cluster = start_cluster(&metrics);
    let dir = cluster.dir().to_path_buf();
    // Declared after the cluster: dropped (Prometheus stopped) before the cluster's directory
    // goes.
    let mut run = Running {
        children: Vec::new(),
    };
    cluster.progress(2000, "at start");

    // Each node's exposition: served, clean for promtool, with its role's families.
    for (id, port) in &metrics {
        let (status, body) = get(*port, "/metrics").unwrap();
        assert_eq!(status, 200, "node {id}: {body}");
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics on node {id}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let has = |family: &str| body.lines().any(|l| l.starts_with(family));
        assert!(
            has(&format!("ethpaxos_frames_received_total{{node=\"{id}\"}}")),
            "{body}"
        );
        if *id <= 3 {
            assert!(
                has("ethpaxos_group_commits_total{role=\"acceptor\""),
                "{body}"
            );
        } else {
            assert!(has("ethpaxos_client_latency_seconds_bucket"), "{body}");
        }
        if *id == 3 {
            assert!(has("ethpaxos_ring_occupancy{ring=\"commit\""), "{body}");
        }
    }
    let (status, _) = get(metrics[0].1, "/nothing").unwrap();
    assert_eq!(status, 404);

    // A real Prometheus scraping every node each second.
    let prom_port = free_tcp_port();
    let targets: Vec<String> = metrics
        .iter()
        .map(|(_, p)| format!("\"127.0.0.1:{p}\""))
        .collect();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 900ms}}\n\
             scrape_configs:\n  - job_name: ethpaxos\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    run.children.push(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !get(prom_port, "/-/ready").is_ok_and(|(s, _)| s == 200) {
        assert!(
            Instant::now() < deadline,
            "prometheus not ready: {}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Every dashboard expression, until it returns a series with a number (rates need two
    // scrapes; a minute at most).
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 20, "only {} expressions", exprs.len());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing = exprs.clone();
    while !missing.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        missing.retain(|expr| {
            let path = format!("/api/v1/query?query={}", urlencode(expr));
            let Ok((200, body)) = get(prom_port, &path) else {
                return true;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let result = &v["data"]["result"];
            let numbers = match v["data"]["resultType"].as_str() {
                Some("vector") => result
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["value"][1].as_str().unwrap_or("NaN").to_string())
                    .collect(),
                Some("scalar") => vec![result[1].as_str().unwrap_or("NaN").to_string()],
                _ => Vec::new(),
            };
            !numbers
                .iter()
                .any(|n| n.parse::<f64>().is_ok_and(f64::is_finite))
        });
    }
    assert!(
        missing.is_empty(),
        "no data from Prometheus for {} dashboard expression(s): {missing:#?}",
        missing.len()
    );
    // And what Prometheus sees is the cluster's real state.
    let value = |expr: &str| -> f64 {
        let (_, body) = get(
            prom_port,
            &format!("/api/v1/query?query={}", urlencode(expr)),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"][0]["value"][1]
            .as_str()
            .unwrap_or_else(|| panic!("{expr}: {body}"))
            .parse()
            .unwrap()
    };
    assert!(value("sum(ethpaxos_values_acknowledged_total)") >= 2000.0);
    assert_eq!(value("sum(ethpaxos_is_leader)"), 1.0, "one leader");
    let leader = value("max(ethpaxos_leader_node)");
    assert_eq!(
        value("count(ethpaxos_leader_node == scalar(max(ethpaxos_leader_node)))"),
        3.0,
        "the three proposers agree on leader {leader}"
    );
    assert!(value("min(ethpaxos_leader_changes_total)") >= 1.0);
    assert!(value("sum(ethpaxos_phase2_latency_seconds_count)") > 0.0);
    assert!(
        value("sum(ethpaxos_values_delivered_total{node=\"9\"})")
            >= value("sum(ethpaxos_values_acknowledged_total)"),
        "the client node delivered what it acknowledged"
    );
}
