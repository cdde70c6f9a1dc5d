//! `ethpaxos bench`: the thesis' experiment, for each storage policy and client count, on a
//! chosen transport. Over UDP, AF_PACKET or DPDK it runs node processes in the namespace
//! testbed: one proposer, three acceptors and two learners, one learner also the client
//! (latency runs from submission to learning). `inproc` runs the demo's in-process cluster
//! instead: the same driver as node processes, but two proposers (a leader and a standby) and
//! two learners, the clients on the first. Each point runs a warm-up, then a measured
//! window; the grid goes to CSV and JSON and three plots (plot.rs).

#![forbid(unsafe_code)]

pub mod cost;
pub mod plot;

use crate::cluster::{run_demo, DemoOptions};
use crate::config::{Polling, TransportKind};
use crate::protocol::ProtocolConfig;
use crate::storage::{FsyncPolicy, StorageConfig};
use crate::testbed::{self, Layout, LayoutSpec, Nodes, Spec, TestbedError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Testbed(#[from] TestbedError),
    #[error("in-process run: {0}")]
    Inproc(String),
    #[error("{0}")]
    Run(String),
    #[error("plot {path}: {why}")]
    Plot { path: PathBuf, why: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Where the nodes run and how their frames travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTransport {
    /// Threads of this process, messages through in-memory channels (`ethpaxos demo`).
    Inproc,
    /// Node processes in the namespace testbed (root), over UDP.
    Udp,
    /// ... raw Ethernet through AF_PACKET on veths.
    Afpacket,
    /// ... raw Ethernet through DPDK (net_af_packet on each veth; `--features dpdk`).
    Dpdk,
    /// ... through DPDK virtio_user ports of `ethpaxos vswitch` (no kernel on the path).
    DpdkVirtio,
}

impl BenchTransport {
    pub fn from_name(s: &str) -> Option<BenchTransport> {
        match s {
            "inproc" => Some(BenchTransport::Inproc),
            "udp" => Some(BenchTransport::Udp),
            "afpacket" => Some(BenchTransport::Afpacket),
            "dpdk" => Some(BenchTransport::Dpdk),
            "dpdk-virtio" => Some(BenchTransport::DpdkVirtio),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BenchTransport::Inproc => "inproc",
            BenchTransport::Udp => "udp",
            BenchTransport::Afpacket => "afpacket",
            BenchTransport::Dpdk => "dpdk",
            BenchTransport::DpdkVirtio => "dpdk-virtio",
        }
    }
}

/// The grid and how each point runs.
#[derive(Clone, Debug)]
pub struct BenchSpec {
    pub transports: Vec<BenchTransport>,
    pub clients: Vec<usize>,
    pub policies: Vec<FsyncPolicy>,
    /// Values each client keeps outstanding (the thesis: 1).
    pub outstanding: usize,
    pub value_size: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Group-commit batch limits (messages, bytes); None: the defaults.
    pub batch_max_messages: Option<usize>,
    pub batch_max_bytes: Option<usize>,
    /// Testbed transports: how the nodes wait for frames, and (adaptive) their empty polls
    /// before sleeping.
    pub polling: Polling,
    pub spin_polls: u32,
    /// `protocol.max_frame` of every node (jumbo frames above 1500).
    pub max_frame: usize,
    /// Results, plots, and (while a point runs) the testbed's files go here.
    pub out: PathBuf,
    /// This program, for the testbed's node processes.
    pub exe: PathBuf,
}

/// One point of the grid.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub transport: String,
    pub policy: String,
    pub clients: usize,
    pub outstanding: usize,
    pub value_size: usize,
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// The measured window, seconds, and the values acknowledged in it.
    pub window_s: f64,
    pub values: u64,
    pub values_per_sec: f64,
    /// Submission to learning at the client's learner, microseconds.
    pub latency_mean_us: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_p999_us: f64,
    /// CPU used in the window by each role, in percent of one core (and by `switch`, the
    /// software switch of dpdk-virtio).
    pub cpu_percent: BTreeMap<String, f64>,
    /// What a value costs, over the window (cost.rs): frames every node sent (in-process:
    /// messages between nodes), CPU microseconds of every node process (not the switch's),
    /// wake-ups of their threads, and, where perf can count them, their system calls.
    #[serde(default)]
    pub frames_per_value: f64,
    #[serde(default)]
    pub cpu_us_per_value: f64,
    #[serde(default)]
    pub wakeups_per_value: f64,
    #[serde(default)]
    pub syscalls_per_value: Option<f64>,
}

fn default_max_frame() -> usize {
    crate::protocol::limits::DEFAULT_MAX_FRAME
}

impl Point {
    pub const CSV_HEADER: &'static str = "transport,policy,clients,outstanding,value_size,window_s,values,values_per_sec,latency_mean_us,latency_p50_us,latency_p99_us,latency_p999_us,cpu_proposer_pct,cpu_acceptor_pct,cpu_learner_pct,cpu_client_pct,cpu_switch_pct,frames_per_value,cpu_us_per_value,wakeups_per_value,syscalls_per_value,max_frame";

    pub fn csv_row(&self) -> String {
        let cpu = |r: &str| self.cpu_percent.get(r).copied().unwrap_or(0.0);
        format!(
            "{},{},{},{},{},{:.3},{},{:.0},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.3},{:.2},{:.3},{},{}",
            self.transport,
            self.policy,
            self.clients,
            self.outstanding,
            self.value_size,
            self.window_s,
            self.values,
            self.values_per_sec,
            self.latency_mean_us,
            self.latency_p50_us,
            self.latency_p99_us,
            self.latency_p999_us,
            cpu("proposer"),
            cpu("acceptor"),
            cpu("learner"),
            cpu("client"),
            cpu("switch"),
            self.frames_per_value,
            self.cpu_us_per_value,
            self.wakeups_per_value,
            self.syscalls_per_value
                .map_or(String::new(), |s| format!("{s:.3}")),
            self.max_frame,
        )
    }

    /// The thesis' name for a storage policy.
    pub fn mode(&self) -> &'static str {
        match self.policy.as_str() {
            "none" => "memory",
            "async" => "async disk",
            _ => "sync disk",
        }
    }
}

/// Runs every point of the grid (transports, then policies, then clients), calling `done`
/// after each, then writes results.csv, results.json and the plots into `spec.out`. `stop`
/// ends the grid early (what ran is still written).
pub fn run(
    spec: &BenchSpec,
    stop: &AtomicBool,
    mut done: impl FnMut(&Point, usize, usize),
) -> Result<Vec<Point>, BenchError> {
    std::fs::create_dir_all(&spec.out)
        .map_err(io(format!("cannot create {}", spec.out.display())))?;
    let total = spec.transports.len() * spec.policies.len() * spec.clients.len();
    let mut points = Vec::new();
    'grid: for &transport in &spec.transports {
        for &policy in &spec.policies {
            for &clients in &spec.clients {
                if stop.load(Ordering::Relaxed) {
                    break 'grid;
                }
                settle(policy);
                let p = match transport {
                    BenchTransport::Inproc => inproc_point(spec, policy, clients, stop)?,
                    _ => testbed_point(spec, transport, policy, clients, stop)?,
                };
                points.push(p);
                done(points.last().expect("just pushed"), points.len(), total);
                write_results(&spec.out, &points)?;
            }
        }
    }
    plot::draw_all(&spec.out, &points)?;
    Ok(points)
}

/// Before a point that writes to disk: the dirty pages an earlier point left are written
/// back first, so its writeback does not slow this point's fsyncs (measured: a synced point
/// right after an async one took twice its latency).
fn settle(policy: FsyncPolicy) {
    if policy != FsyncPolicy::None {
        let _ = std::process::Command::new("sync").status();
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn storage(spec: &BenchSpec, policy: FsyncPolicy) -> StorageConfig {
    let mut s = StorageConfig {
        fsync_policy: policy,
        ..StorageConfig::default()
    };
    if let Some(m) = spec.batch_max_messages {
        s.batch_max_messages = m;
    }
    if let Some(b) = spec.batch_max_bytes {
        s.batch_max_bytes = b;
    }
    s
}

fn inproc_point(
    spec: &BenchSpec,
    policy: FsyncPolicy,
    clients: usize,
    stop: &AtomicBool,
) -> Result<Point, BenchError> {
    let interrupt = Arc::new(AtomicBool::new(stop.load(Ordering::Relaxed)));
    let opts = DemoOptions {
        duration: spec.warmup + spec.duration,
        clients,
        outstanding: spec.outstanding,
        value_size: spec.value_size,
        kill_leader_after: None,
        protocol: ProtocolConfig {
            max_frame: spec.max_frame,
            ..ProtocolConfig::default()
        },
        storage: storage(spec, policy),
        interrupt: Some(interrupt),
        warmup: spec.warmup,
    };
    let summary = run_demo(&opts, |_| {}).map_err(|e| BenchError::Inproc(format!("{e:#}")))?;
    if !summary.failures.is_empty() || !summary.learners_agree() {
        return Err(BenchError::Inproc(format!(
            "{policy} with {clients} clients: {summary}"
        )));
    }
    let w = &summary.window;
    let secs = w.length.as_secs_f64();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let per_value = |x: f64| x / (w.acknowledged.max(1) as f64);
    Ok(Point {
        transport: BenchTransport::Inproc.name().into(),
        policy: policy.to_string(),
        clients,
        outstanding: spec.outstanding,
        value_size: spec.value_size,
        max_frame: spec.max_frame,
        window_s: secs,
        values: w.acknowledged,
        values_per_sec: w.values_per_sec(),
        latency_mean_us: us(w.latency_mean),
        latency_p50_us: us(w.latency_p50),
        latency_p99_us: us(w.latency_p99),
        latency_p999_us: us(w.latency_p999),
        cpu_percent: w
            .cpu
            .iter()
            .map(|(role, s)| (role.clone(), 100.0 * s / secs.max(1e-9)))
            .collect(),
        frames_per_value: per_value(w.frames as f64),
        cpu_us_per_value: per_value(1e6 * w.cpu.iter().map(|(_, s)| s).sum::<f64>()),
        wakeups_per_value: per_value(w.wakeups as f64),
        syscalls_per_value: None,
    })
}

/// CPU seconds (user + system) a process has used.
fn process_cpu(pid: u32) -> f64 {
    crate::cluster::stat_cpu_seconds(Path::new(&format!("/proc/{pid}/stat")))
}

fn lines(path: &Path) -> u64 {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count() as u64)
        .unwrap_or(0)
}

/// Node processes, stopped (SIGTERM, then SIGKILL) when dropped.
struct Processes(Vec<(u16, Child)>);

impl Processes {
    fn terminate(&mut self, within: Duration) {
        for (_, c) in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + within;
        for (_, c) in &mut self.0 {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        self.0.clear();
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.terminate(Duration::from_secs(3));
    }
}

fn role_of(id: u16) -> &'static str {
    match id {
        1 => "proposer",
        11..=13 => "acceptor",
        testbed::CLIENT => "client",
        _ => "learner",
    }
}

fn testbed_point(
    spec: &BenchSpec,
    transport: BenchTransport,
    policy: FsyncPolicy,
    clients: usize,
    stop: &AtomicBool,
) -> Result<Point, BenchError> {
    let dir = spec
        .out
        .join(format!("run-{}-{policy}-{clients}", transport.name()));
    let _ = std::fs::remove_dir_all(&dir);
    let layout = LayoutSpec {
        layout: Layout::Thesis,
        clients,
        outstanding: spec.outstanding,
        policy,
        auth: false,
        transport: match transport {
            BenchTransport::Udp => TransportKind::Udp,
            BenchTransport::Dpdk | BenchTransport::DpdkVirtio => TransportKind::Dpdk,
            _ => TransportKind::Afpacket,
        },
        virtio: transport == BenchTransport::DpdkVirtio,
        polling: spec.polling,
        protocol: ProtocolConfig {
            max_frame: spec.max_frame,
            ..ProtocolConfig::default()
        },
        ..LayoutSpec::default()
    };
    let mut configs = testbed::layout_configs(&layout, None, &dir);
    for c in &mut configs {
        c.load.value_size = spec.value_size;
        c.load.warmup_ms = spec.warmup.as_millis() as u64;
        c.pipeline.spin_polls = spec.spin_polls;
        let s = storage(spec, c.storage.fsync_policy);
        c.storage.batch_max_messages = s.batch_max_messages;
        c.storage.batch_max_bytes = s.batch_max_bytes;
    }
    let tb = testbed::up(&Spec {
        name: "bench".into(),
        dir: dir.clone(),
        nodes: Nodes::Configs(configs),
    })?;
    let result = without_delivered_files(&tb)
        .and_then(|()| measure(spec, &tb, transport, policy, clients, stop));
    testbed::down(&tb.name)?;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn measure(
    spec: &BenchSpec,
    tb: &testbed::Testbed,
    transport: BenchTransport,
    policy: FsyncPolicy,
    clients: usize,
    stop: &AtomicBool,
) -> Result<Point, BenchError> {
    let mut procs = Processes(Vec::new());
    let vswitch = tb.start_vswitch(&spec.exe)?;
    for n in &tb.nodes {
        procs.0.push((n.id, tb.start(n.id, &spec.exe)?));
    }
    let sleep = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let acked = tb.dir.join("acknowledged.txt");
    sleep(spec.warmup);
    let cpu = |procs: &Processes| -> Vec<f64> {
        procs.0.iter().map(|(_, c)| process_cpu(c.id())).collect()
    };
    let ids: Vec<u16> = procs.0.iter().map(|(id, _)| *id).collect();
    let pids: Vec<u32> = procs.0.iter().map(|(_, c)| c.id()).collect();
    let frames = || -> u64 { ids.iter().map(|id| frames_sent(&tb.dir, *id)).sum() };
    // The software switch of virtio_user nodes forwards every frame: its CPU is the network's.
    let switch = vswitch.as_ref().map(Child::id);
    let syscalls = cost::SyscallCount::start(&pids, &tb.dir.join("perf-syscalls.txt"));
    let (t0, a0, cpu0) = (Instant::now(), lines(&acked), cpu(&procs));
    let (frames0, wakeups0) = (frames(), cost::wakeups(&pids));
    let switch0 = switch.map(process_cpu);
    sleep(spec.duration);
    let (window, a1, cpu1) = (t0.elapsed(), lines(&acked), cpu(&procs));
    let (frames1, wakeups1) = (frames(), cost::wakeups(&pids));
    let switch1 = switch.map(process_cpu);
    let syscalls = syscalls.and_then(cost::SyscallCount::finish);
    for (id, c) in &mut procs.0 {
        if let Ok(Some(status)) = c.try_wait() {
            let log =
                std::fs::read_to_string(tb.dir.join(format!("node-{id}.log"))).unwrap_or_default();
            return Err(BenchError::Run(format!(
                "node {id} stopped during the run ({status}): {log}"
            )));
        }
    }
    procs.terminate(Duration::from_secs(10));
    // After the nodes: stopped (and reaped) with them.
    drop(Processes(vswitch.into_iter().map(|c| (0, c)).collect()));
    let summary_path = tb.dir.join(format!("summary-{}.json", testbed::CLIENT));
    let summary: serde_json::Value = std::fs::read_to_string(&summary_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .ok_or_else(|| {
            BenchError::Run(format!(
                "the client node left no summary at {}",
                summary_path.display()
            ))
        })?;
    let us = |k: &str| summary[k].as_f64().unwrap_or(f64::NAN);
    let secs = window.as_secs_f64();
    let mut cpu_percent = BTreeMap::new();
    for (k, id) in ids.iter().enumerate() {
        *cpu_percent.entry(role_of(*id).to_string()).or_insert(0.0) +=
            100.0 * (cpu1[k] - cpu0[k]) / secs.max(1e-9);
    }
    if let (Some(a), Some(b)) = (switch0, switch1) {
        cpu_percent.insert("switch".into(), 100.0 * (b - a) / secs.max(1e-9));
    }
    let values = a1.saturating_sub(a0);
    let per_value = |x: f64| x / (values.max(1) as f64);
    Ok(Point {
        transport: transport.name().into(),
        policy: policy.to_string(),
        clients,
        outstanding: spec.outstanding,
        value_size: spec.value_size,
        max_frame: spec.max_frame,
        window_s: secs,
        values,
        values_per_sec: values as f64 / secs.max(1e-9),
        latency_mean_us: us("latency_mean_us"),
        latency_p50_us: us("latency_p50_us"),
        latency_p99_us: us("latency_p99_us"),
        latency_p999_us: us("latency_p999_us"),
        cpu_percent,
        frames_per_value: per_value(frames1.saturating_sub(frames0) as f64),
        cpu_us_per_value: per_value(1e6 * cpu1.iter().zip(&cpu0).map(|(b, a)| b - a).sum::<f64>()),
        wakeups_per_value: per_value(wakeups1.saturating_sub(wakeups0) as f64),
        syscalls_per_value: syscalls.map(|n| per_value(n as f64)),
    })
}

/// The bench's learners write no delivered file: an appliance's learner hands its stream
/// to an application, and a hashed, formatted line per value was a tenth of the nodes' CPU in
/// a profile (docs/benchmarks.md); the in-process cluster writes none either.
fn without_delivered_files(tb: &testbed::Testbed) -> Result<(), BenchError> {
    for n in &tb.nodes {
        let mut cfg = crate::config::NodeConfig::load(&n.config)
            .map_err(|e| BenchError::Run(e.to_string()))?;
        cfg.output.delivered = None;
        let yaml = serde_yaml_ng::to_string(&cfg).map_err(|e| BenchError::Run(e.to_string()))?;
        std::fs::write(&n.config, yaml)
            .map_err(io(format!("cannot write {}", n.config.display())))?;
    }
    Ok(())
}

/// Frames node `id` has sent, as its running summary (refreshed every 200 ms) says.
fn frames_sent(dir: &Path, id: u16) -> u64 {
    std::fs::read_to_string(dir.join(format!("summary-{id}.json")))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|s| s["transport"]["sent"].as_u64())
        .unwrap_or(0)
}

/// Draws the plots again from `out/results.json` (e.g. after merging grids).
pub fn replot(out: &Path) -> Result<usize, BenchError> {
    let path = out.join("results.json");
    let text =
        std::fs::read_to_string(&path).map_err(io(format!("cannot read {}", path.display())))?;
    let points: Vec<Point> = serde_json::from_str(&text)
        .map_err(|e| BenchError::Run(format!("{}: {e}", path.display())))?;
    plot::draw_all(out, &points)?;
    Ok(points.len())
}

fn write_results(out: &Path, points: &[Point]) -> Result<(), BenchError> {
    let mut csv = String::from(Point::CSV_HEADER);
    csv.push('\n');
    for p in points {
        csv.push_str(&p.csv_row());
        csv.push('\n');
    }
    let path = out.join("results.csv");
    std::fs::write(&path, csv).map_err(io(format!("cannot write {}", path.display())))?;
    let json = serde_json::to_string_pretty(points).expect("points serialise");
    let path = out.join("results.json");
    std::fs::write(&path, json + "\n").map_err(io(format!("cannot write {}", path.display())))
}
