use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use ethpaxos::cluster::{self, DemoOptions};
use ethpaxos::config::{NodeConfig, Polling, Stages, TransportKind};
use ethpaxos::node;
use ethpaxos::protocol::ProtocolConfig;
use ethpaxos::sim::{self, FaultKind, Layout, SimConfig};
use ethpaxos::storage::{FsyncPolicy, StorageConfig};
use ethpaxos::testbed;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "ethpaxos",
    version,
    about = "Multi-Paxos replication over raw Ethernet frames"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum TestbedAction {
    /// Creates the namespaces, veths and bridge, writes each node's config into --dir, and
    /// with --start runs the nodes (logs in --dir/node-<id>.log).
    Up {
        #[arg(long)]
        dir: PathBuf,
        /// Prefix of every namespace and hub-side link (1-6 letters or digits).
        #[arg(long, default_value = "epx")]
        name: String,
        /// replicas (3 replicas + a client node), roles (2 proposers, 3 acceptors,
        /// 2 learners + a client node) or thesis (1 proposer, 3 acceptors, 1 learner + the
        /// client node, also a learner).
        #[arg(long, default_value = "replicas")]
        layout: String,
        /// Run the node configs in this directory (e.g. config/afpacket) instead of a layout.
        #[arg(long, conflicts_with = "layout")]
        from: Option<PathBuf>,
        #[arg(long, default_value_t = 4)]
        clients: usize,
        #[arg(long, default_value_t = 8)]
        outstanding: usize,
        #[arg(long, default_value = "sync", value_parser = parse_policy)]
        policy: FsyncPolicy,
        #[arg(long)]
        start: bool,
        /// Authenticate every frame with a fresh random key (written to --dir/frame.key).
        #[arg(long)]
        auth: bool,
        /// afpacket (raw Ethernet), udp (addresses 10.45.0.<id>) or dpdk (raw Ethernet
        /// through DPDK: net_af_packet on each veth, or with --virtio virtio_user ports of a
        /// software switch; a build with --features dpdk).
        #[arg(long, default_value = "afpacket", value_parser = parse_transport)]
        transport: TransportKind,
        /// These nodes run on DPDK, the others on --transport: a mixed cluster (e.g. 11,12).
        #[arg(long, value_delimiter = ',')]
        dpdk_nodes: Vec<u16>,
        /// With --transport dpdk or --dpdk-nodes: attach DPDK nodes through virtio_user to vhost-user ports of
        /// `ethpaxos vswitch`, as VMs would.
        #[arg(long)]
        virtio: bool,
        /// adaptive or busy.
        #[arg(long, default_value = "adaptive", value_parser = parse_polling)]
        polling: Polling,
        /// single (one loop per node) or staged (RX, a stage per role, commit, TX threads).
        #[arg(long, default_value = "single", value_parser = parse_stages)]
        stages: Stages,
    },
    /// Kills the testbed's nodes and deletes its namespaces, veths and bridge.
    Down {
        #[arg(long, default_value = "epx")]
        name: String,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Runs one node from its YAML config until SIGTERM or SIGINT.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Checks a node's YAML config and says what the node would do.
    CheckConfig { file: PathBuf },
    /// A cluster of network namespaces on this machine joined by a bridge, nodes on raw
    /// Ethernet (AF_PACKET). Needs root.
    Testbed {
        #[command(subcommand)]
        action: TestbedAction,
    },
    /// Sends raw frames out of an interface (testing: malformed, foreign-cluster and
    /// non-member frames). Needs root.
    #[command(hide = true)]
    Inject {
        #[arg(long)]
        interface: String,
        /// garbage | foreign-cluster | non-member | truncated
        #[arg(long)]
        kind: String,
        #[arg(long, default_value_t = 100)]
        count: usize,
        /// Destination MAC (default: broadcast).
        #[arg(long, default_value = "ff:ff:ff:ff:ff:ff")]
        dst: String,
    },
    /// Relays our frames between two interfaces, dropping, duplicating and reordering them
    /// at random (testing: this kernel has no `tc netem`). Runs until SIGTERM.
    #[command(hide = true)]
    Impair {
        #[arg(long)]
        a: String,
        #[arg(long)]
        b: String,
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        #[arg(long, default_value_t = 0.0)]
        duplicate: f64,
        #[arg(long, default_value_t = 0.0)]
        reorder: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// A software switch of DPDK vhost-user ports (the virtio path of a VM testbed): nodes
    /// attach with a virtio_user device (`dpdk.vdevs: ["virtio_user0,path=SOCKET"]`). Learns
    /// MACs, floods the unknown. Runs until SIGTERM; needs root and `--features dpdk`.
    Vswitch {
        /// A vhost-user socket to create, one per port (repeat the option).
        #[arg(long = "socket", required = true)]
        sockets: Vec<PathBuf>,
        /// A kernel interface to bridge too (net_af_packet), e.g. a veth into a Linux bridge.
        #[arg(long)]
        uplink: Option<String>,
        /// Poll without napping when idle (one core at 100%).
        #[arg(long)]
        busy: bool,
    },
    /// The thesis' experiment: 1 proposer, 3 acceptors, 2 learners (one also the client) for
    /// each storage mode and client count; writes results.csv, results.json and three PNG
    /// plots into --out. Testbed transports need root.
    Bench {
        /// Transports, in order: inproc (threads of this process), udp, afpacket, dpdk or
        /// dpdk-virtio (node processes in the namespace testbed), e.g. inproc,afpacket.
        #[arg(long, value_delimiter = ',', default_value = "inproc")]
        transport: Vec<String>,
        /// Client counts, e.g. 1,2,4,8,16,32,64,128,256.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "1,2,4,8,16,32,64,128,256"
        )]
        clients: Vec<usize>,
        /// Storage modes: none (memory), async, sync.
        #[arg(long, value_delimiter = ',', default_value = "none,async,sync", value_parser = parse_policy)]
        policies: Vec<FsyncPolicy>,
        /// Values each client keeps outstanding (the thesis: 1).
        #[arg(long, default_value_t = 1)]
        outstanding: usize,
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// Per point: warm-up, then the measured window.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        warmup: Duration,
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Group commit: at most this many messages' changes per batch.
        #[arg(long)]
        batch_max_messages: Option<usize>,
        /// Group commit: at most about this many bytes per batch.
        #[arg(long)]
        batch_max_bytes: Option<usize>,
        /// Testbed transports: adaptive or busy.
        #[arg(long, default_value = "adaptive", value_parser = parse_polling)]
        polling: Polling,
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// Run nothing: draw the plots again from --out/results.json.
        #[arg(long)]
        replot: bool,
    },
    /// Submits values to a cluster and waits for each to be delivered: the values given, or
    /// those read from standard input (see --format). The config must give this node the
    /// client and learner roles. Exits non-zero if any value was not acknowledged in time.
    Submit {
        #[arg(long)]
        config: PathBuf,
        /// How long to wait for each acknowledgement.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// How values are written: text (one per argument or per line of standard input,
        /// any bytes but newline), hex (each value in hex digits), or length-prefixed
        /// (standard input only: each value is a 4-byte big-endian length, then its bytes).
        #[arg(long, default_value = "text", value_parser = ["text", "hex", "length-prefixed"])]
        format: String,
        values: Vec<String>,
    },
    /// Prints a learner's delivered stream (its config's output.socket) as it arrives.
    Tail {
        #[arg(long)]
        socket: PathBuf,
        /// Stop after this many values (at least 1).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Runs seeded simulations under loss, duplication, reordering, partitions and crashes, and
    /// checks agreement, validity, order, exactly-once delivery and liveness.
    Simulate {
        /// How many seeds to run.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// The first seed.
        #[arg(long, default_value_t = 0)]
        start_seed: u64,
        /// Inject only this fault kind (none, loss, duplication-reordering, partition,
        /// acceptor-crash, leader-crash, learner-crash, everything, proposer-crash,
        /// learner-away, power-cut, standby-flap, forged) instead of cycling by seed.
        #[arg(long, value_parser = parse_kind)]
        kind: Option<FaultKind>,
        /// The acceptors' fsync policy: sync (crash safe), async (a power loss may lose the
        /// last interval) or none (memory only).
        #[arg(long, default_value = "sync", value_parser = parse_policy)]
        policy: FsyncPolicy,
        /// Run every seed on this layout (split: a node per role; replicas: proposer,
        /// acceptor and learner in each node) instead of alternating by seed.
        #[arg(long, value_parser = parse_layout)]
        layout: Option<Layout>,
        /// Print one line per seed, not only failures.
        #[arg(long)]
        verbose: bool,
    },
    /// Runs an in-process cluster (leader + standby, 3 acceptors, 2 learners, N clients) under
    /// load, prints progress each second and a summary, and checks both learners agree.
    Demo {
        /// How long to run, e.g. 10s or 1m.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Client sessions.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Values each client keeps outstanding.
        #[arg(long, default_value_t = 64)]
        outstanding: usize,
        /// Bytes per value.
        #[arg(long, default_value_t = 64)]
        value_size: usize,
        /// Kill the leader this long after the start, to show the standby taking over.
        #[arg(long, value_parser = humantime::parse_duration)]
        kill_leader_after: Option<Duration>,
        /// Protocol tunables (YAML, see config/demo.yaml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Acceptors' fsync policy: sync (crash safe, the default), async or none (memory).
        #[arg(long, default_value = "sync", value_parser = parse_policy)]
        policy: FsyncPolicy,
        /// Where the acceptors' RocksDB directories go (default: a temporary directory,
        /// removed at the end).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// async: how often the write-ahead log is synced.
        #[arg(long, default_value_t = 10)]
        fsync_interval_ms: u64,
    },
}

fn main() -> std::process::ExitCode {
    // Timestamped log lines (RFC 3339, UTC) on stderr, so a leader change can be lined up
    // with anything else an operator sees.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The cause chain, never a backtrace: a config error is not a crash, whatever
            // RUST_BACKTRACE says.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    match Cli::parse().command {
        Command::Run { config } => run_node(&config),
        Command::Testbed { action } => testbed(action),
        Command::Inject {
            interface,
            kind,
            count,
            dst,
        } => inject(&interface, &kind, count, &dst),
        Command::Impair {
            a,
            b,
            loss,
            duplicate,
            reorder,
            seed,
        } => {
            let imp = testbed::impair::Impairment {
                loss,
                duplicate,
                reorder,
                seed,
            };
            imp.validate().map_err(anyhow::Error::msg)?;
            let stop = stop_on_signals()?;
            let stats = testbed::impair::relay(&a, &b, imp, &stop)?;
            println!("impair {a} <-> {b}: {stats:?}");
            Ok(())
        }
        Command::Submit {
            config,
            timeout,
            format,
            values,
        } => submit(&config, timeout, &format, values),
        Command::Vswitch {
            sockets,
            uplink,
            busy,
        } => vswitch(sockets, uplink, busy),
        Command::Bench {
            transport,
            clients,
            policies,
            outstanding,
            value_size,
            warmup,
            duration,
            batch_max_messages,
            batch_max_bytes,
            polling,
            out,
            replot,
        } => {
            if replot {
                let n = ethpaxos::bench::replot(&out)?;
                println!("{n} points drawn again into {}", out.display());
                return Ok(());
            }
            let transports = transport
                .iter()
                .map(|t| {
                    ethpaxos::bench::BenchTransport::from_name(t).with_context(|| {
                        format!("unknown transport `{t}`; one of: inproc, udp, afpacket, dpdk, dpdk-virtio")
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            if clients.is_empty() || clients.contains(&0) {
                bail!("--clients: give counts of at least 1, e.g. 1,2,4");
            }
            if outstanding == 0 {
                bail!("--outstanding must be at least 1");
            }
            let spec = ethpaxos::bench::BenchSpec {
                transports,
                clients,
                policies,
                outstanding,
                value_size,
                warmup,
                duration,
                batch_max_messages,
                batch_max_bytes,
                polling,
                out,
                exe: std::env::current_exe().context("cannot find this executable")?,
            };
            bench(&spec)
        }
        Command::Tail { socket, count } => tail(&socket, count),
        Command::CheckConfig { file } => {
            let cfg = NodeConfig::load(&file)?;
            let me = cfg.me();
            let m = cfg.membership();
            let reach = match cfg.transport {
                TransportKind::Udp => {
                    format!("udp {}", me.udp.map(|a| a.to_string()).unwrap_or_default())
                }
                TransportKind::Afpacket => format!(
                    "afpacket {} ({})",
                    cfg.interface.as_deref().unwrap_or_default(),
                    me.mac.as_deref().unwrap_or_default()
                ),
                TransportKind::Dpdk => {
                    let d = cfg.dpdk.clone().unwrap_or_default();
                    format!(
                        "dpdk port {} ({}), EAL arguments: {}",
                        d.port,
                        me.mac.as_deref().unwrap_or_default(),
                        d.eal_command_line(0).join(" ")
                    )
                }
            };
            println!(
                "{}: ok. node {} plays {:?} on {}; cluster {}: {} proposer(s), {} acceptors (quorum {}), {} learner(s)",
                file.display(),
                cfg.node_id,
                me.roles,
                reach,
                cfg.protocol.cluster_id,
                m.proposers.len(),
                m.acceptors.len(),
                m.quorum(),
                m.learners.len()
            );
            if let Some(a) = &cfg.metrics_address {
                println!("metrics: http://{a}/metrics");
            }
            Ok(())
        }
        Command::Simulate {
            seeds,
            start_seed,
            kind,
            policy,
            layout,
            verbose,
        } => simulate(seeds, start_seed, kind, policy, layout, verbose),
        Command::Demo {
            duration,
            clients,
            outstanding,
            value_size,
            kill_leader_after,
            config,
            policy,
            data_dir,
            fsync_interval_ms,
        } => {
            let protocol = match config {
                Some(path) => load_protocol(&path)?,
                None => ProtocolConfig::default(),
            };
            let opts = DemoOptions {
                duration,
                clients,
                outstanding,
                value_size,
                kill_leader_after,
                protocol,
                storage: StorageConfig {
                    fsync_policy: policy,
                    path: data_dir,
                    fsync_interval_ms,
                    ..StorageConfig::default()
                },
                interrupt: Some(stop_on_signals()?),
                warmup: Duration::ZERO,
            };
            let summary = cluster::run_demo(&opts, |line| println!("{line}"))?;
            println!("{summary}");
            if !summary.failures.is_empty() {
                bail!("{} node(s) stopped on an error", summary.failures.len());
            }
            if !summary.learners_agree() {
                bail!("the learners delivered different sequences");
            }
            Ok(())
        }
    }
}

/// A flag SIGTERM and SIGINT set, for a clean stop.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone())
            .context("cannot install the signal handler")?;
    }
    Ok(stop)
}

fn bench(spec: &ethpaxos::bench::BenchSpec) -> Result<()> {
    let stop = stop_on_signals()?;
    let total = (spec.transports.len() * spec.policies.len() * spec.clients.len()) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} points, about {eta} left  {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let per_point = spec.warmup + spec.duration;
    let names: Vec<&str> = spec.transports.iter().map(|t| t.name()).collect();
    bar.set_message(format!(
        "{} points of {:?} each on {}",
        total,
        per_point,
        names.join(", ")
    ));
    bar.enable_steady_tick(Duration::from_millis(500));
    println!("| transport | mode | clients | values/s | mean | p50 | p99 | p99.9 | CPU % (proposer/acceptors/learner/client) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let points = ethpaxos::bench::run(spec, &stop, |p, _k, _n| {
        let cpu = |r: &str| p.cpu_percent.get(r).copied().unwrap_or(0.0);
        let row = format!(
            "| {} | {} | {} | {:.0} | {:.0} us | {:.0} us | {:.0} us | {:.0} us | {:.0}/{:.0}/{:.0}/{:.0} |",
            p.transport,
            p.mode(),
            p.clients,
            p.values_per_sec,
            p.latency_mean_us,
            p.latency_p50_us,
            p.latency_p99_us,
            p.latency_p999_us,
            cpu("proposer"),
            cpu("acceptor"),
            cpu("learner"),
            cpu("client")
        );
        bar.suspend(|| println!("{row}"));
        bar.inc(1);
        bar.set_message(format!(
            "last: {} {} clients {:.0} values/s",
            p.mode(),
            p.clients,
            p.values_per_sec
        ));
    })?;
    bar.finish_and_clear();
    println!(
        "\n{} points; results.csv, results.json and latency-vs-clients.png, throughput-vs-clients.png, latency-vs-throughput.png in {}",
        points.len(),
        spec.out.display()
    );
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("interrupted after {} of {total} points", points.len());
    }
    Ok(())
}

#[cfg(feature = "dpdk")]
fn vswitch(sockets: Vec<PathBuf>, uplink: Option<String>, busy: bool) -> Result<()> {
    let cfg = ethpaxos::vswitch::VswitchConfig {
        sockets,
        uplink,
        busy,
    };
    let stop = stop_on_signals()?;
    let stats = ethpaxos::vswitch::run(&cfg, &stop, || {
        println!("vswitch ready: {} vhost-user port(s)", cfg.sockets.len());
    })?;
    println!("vswitch stopped: {stats:?}");
    Ok(())
}

#[cfg(not(feature = "dpdk"))]
fn vswitch(_: Vec<PathBuf>, _: Option<String>, _: bool) -> Result<()> {
    bail!("this build has no DPDK: build with `cargo build --release --features dpdk`")
}

fn run_node(path: &Path) -> Result<()> {
    let cfg = NodeConfig::load(path)?;
    let stop = stop_on_signals()?;
    let stats = node::run(&cfg, &stop).with_context(|| format!("node {}", cfg.node_id))?;
    eprintln!("node {} stopped.\n{stats}", cfg.node_id);
    if let Some(path) = &cfg.output.summary {
        let json = serde_json::to_string_pretty(&stats).context("node summary")?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write output.summary {}", path.display()))?;
    }
    Ok(())
}

fn load_protocol(path: &PathBuf) -> Result<ProtocolConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let cfg: ProtocolConfig = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not a valid protocol config", path.display()))?;
    cfg.validate()
        .with_context(|| format!("{}: invalid protocol config", path.display()))?;
    Ok(cfg)
}

fn parse_kind(s: &str) -> Result<FaultKind, String> {
    FaultKind::from_name(s).ok_or_else(|| {
        let names: Vec<_> = FaultKind::ALL.iter().map(|k| k.name()).collect();
        format!("unknown fault kind `{s}`; one of: {}", names.join(", "))
    })
}

fn parse_policy(s: &str) -> Result<FsyncPolicy, String> {
    FsyncPolicy::from_name(s)
        .ok_or_else(|| format!("unknown fsync policy `{s}`; one of: sync, async, none"))
}

fn parse_layout(s: &str) -> Result<Layout, String> {
    Layout::from_name(s).ok_or_else(|| format!("unknown layout `{s}`; one of: split, replicas"))
}

fn simulate(
    seeds: u64,
    start: u64,
    kind: Option<FaultKind>,
    policy: FsyncPolicy,
    layout: Option<Layout>,
    verbose: bool,
) -> Result<()> {
    let started = Instant::now();
    // Written, not printed: a closed pipe (`| head`) ends the run with an error, not a panic.
    let mut out = std::io::stdout().lock();
    let mut failed = Vec::new();
    let mut last_report = Instant::now();
    for seed in start..start.saturating_add(seeds) {
        let kind = kind.unwrap_or_else(|| FaultKind::for_seed(seed));
        let mut cfg = SimConfig::with_kind(seed, kind).with_policy(policy);
        if let Some(layout) = layout {
            cfg = cfg.with_layout(layout);
        }
        let report = sim::run(cfg);
        if verbose {
            let s = &report.stats;
            writeln!(
                out,
                "seed {seed} {:<22} {:<8} {} values delivered, {} frames ({} lost, {} of them to full receive queues, {} duplicated), {} elections, {} crashes, {} catch-up requests, {} learners trimmed out, acceptors refused {} oversized 2a and {} top-round ballots and put off {} prepares, {:.2}s virtual",
                report.kind.to_string(),
                report.layout.name(),
                s.values_delivered,
                s.frames_sent,
                s.frames_lost,
                s.frames_overflowed,
                s.frames_duplicated,
                s.leader_elections,
                s.crashes,
                s.catchup_requests,
                s.trimmed_out,
                s.acceptors.refused_oversized,
                s.acceptors.refused_top_round,
                s.acceptors.deferred_prepares,
                s.virtual_time.as_secs_f64()
            )?;
        }
        if !report.ok() {
            writeln!(
                out,
                "FAIL seed {seed} ({}, {} layout):",
                report.kind,
                report.layout.name()
            )?;
            for v in &report.violations {
                writeln!(out, "  {v}")?;
            }
            if verbose {
                writeln!(out, "  final state: {}", report.final_state)?;
            }
            writeln!(out, "  replay: {}", report.replay_command())?;
            failed.push(seed);
        }
        if !verbose && last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "  ... {} of {seeds} seeds run, {} failed",
                seed - start + 1,
                failed.len()
            );
        }
    }
    writeln!(
        out,
        "{} seeds from {start}: {} passed, {} failed in {:.1}s",
        seeds,
        seeds - failed.len() as u64,
        failed.len(),
        started.elapsed().as_secs_f64()
    )?;
    if !failed.is_empty() {
        eprintln!(
            "error: {} seeds violated a property: {failed:?}",
            failed.len()
        );
        std::process::exit(1);
    }
    Ok(())
}

fn testbed(action: TestbedAction) -> Result<()> {
    match action {
        TestbedAction::Up {
            dir,
            name,
            layout,
            from,
            clients,
            outstanding,
            policy,
            start,
            auth,
            transport,
            polling,
            stages,
            dpdk_nodes,
            virtio,
        } => {
            if virtio && transport != TransportKind::Dpdk && dpdk_nodes.is_empty() {
                bail!("--virtio attaches DPDK nodes: give --transport dpdk or --dpdk-nodes too");
            }
            let nodes = match from {
                Some(d) => testbed::Nodes::Configs(testbed::load_configs(&d)?),
                None => testbed::Nodes::Layout(testbed::LayoutSpec {
                    layout: testbed::Layout::from_name(&layout).with_context(|| {
                        format!("unknown layout `{layout}`; one of: replicas, roles, thesis")
                    })?,
                    clients,
                    outstanding,
                    policy,
                    auth,
                    transport,
                    polling,
                    stages,
                    dpdk_nodes,
                    virtio,
                    dpdk_hugepages: false,
                    protocol: Default::default(),
                }),
            };
            let spec = testbed::Spec { name, dir, nodes };
            let tb = testbed::up(&spec)?;
            for n in &tb.nodes {
                println!(
                    "node {:>2} {:<24} namespace {:<8} mac {}  config {}",
                    n.id,
                    format!("{:?}", n.roles),
                    n.namespace,
                    n.mac,
                    n.config.display()
                );
            }
            if start {
                let exe = std::env::current_exe().context("cannot find this executable")?;
                // Left running: `testbed down` stops it with the nodes (it is in the hub).
                let _vswitch = tb.start_vswitch(&exe)?;
                for n in &tb.nodes {
                    tb.start(n.id, &exe)?;
                }
                println!(
                    "started {} nodes; logs in {}; stop with `ethpaxos testbed down --name {}`",
                    tb.nodes.len(),
                    tb.dir.display(),
                    tb.name
                );
            }
            Ok(())
        }
        TestbedAction::Down { name } => {
            testbed::down(&name)?;
            println!("testbed {name}: nodes stopped, namespaces deleted");
            Ok(())
        }
    }
}

fn inject(interface: &str, kind: &str, count: usize, dst: &str) -> Result<()> {
    use ethpaxos::protocol::{Ballot, Message};
    use ethpaxos::wire::{self, FrameHeader};
    let dst =
        wire::parse_mac(dst).with_context(|| format!("--dst {dst:?} is not a MAC address"))?;
    let heartbeat = |cluster, sender| {
        let mut f = Vec::new();
        let header = FrameHeader {
            dst,
            src: [0x02, 0xbb, 0, 0, 0, 1],
            cluster,
            sender,
        };
        let msg = Message::Heartbeat {
            ballot: Ballot::new(u32::MAX, sender),
            decided_below: u64::MAX,
            next_instance: u64::MAX,
        };
        wire::encode(&header, &msg, 1500, &mut f).map(|_| f)
    };
    let frame: Vec<u8> = match kind {
        "garbage" => {
            let mut f = heartbeat(1, 1)?;
            for b in &mut f[14..] {
                *b = 0xEE;
            }
            f
        }
        "truncated" => {
            let mut f = heartbeat(1, 1)?;
            f.truncate(20);
            f
        }
        "foreign-cluster" => heartbeat(0xF0F0, 1)?,
        "non-member" => heartbeat(1, 4242)?,
        "forged" => {
            // Claims a tag (the auth flag and 16 bytes) it could not have computed.
            let mut f = heartbeat(1, 1)?;
            ethpaxos::wire::auth::FrameKey::new([0x5A; 32]).seal(&mut f);
            f
        }
        "replay" => return replay(interface, count),
        other => {
            bail!("unknown --kind {other}; one of: garbage, truncated, foreign-cluster, non-member")
        }
    };
    let frames = vec![frame; count];
    let sent = ethpaxos::transport::afpacket::inject(interface, &frames)?;
    println!("sent {sent} {kind} frames on {interface}");
    Ok(())
}

/// Captures `count` of the cluster's frames passing `interface` (promiscuous, at most 10 s),
/// then sends each of them again three times: old, genuine frames replayed late.
fn replay(interface: &str, count: usize) -> Result<()> {
    use ethpaxos::transport::afpacket::RawSocket;
    let sock = RawSocket::open(interface, true)?;
    let mut captured = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    while captured.len() < count && Instant::now() < deadline {
        RawSocket::wait_any(&[&sock], Duration::from_millis(10));
        while let Some(n) = sock.try_recv(&mut buf) {
            captured.push(buf[..n].to_vec());
            if captured.len() == count {
                break;
            }
        }
    }
    // Let the cluster move on before the old frames come back.
    std::thread::sleep(Duration::from_millis(500));
    let mut sent = 0;
    for _ in 0..3 {
        sent += captured.iter().filter(|f| sock.send(f)).count();
    }
    println!(
        "captured {} frames on {interface}, replayed {sent}",
        captured.len()
    );
    Ok(())
}

/// At most the first 40 characters of a value, and its size: an error never echoes a whole
/// (possibly huge, possibly binary) value.
fn shown(v: &[u8]) -> String {
    let text = String::from_utf8_lossy(&v[..v.len().min(40)]).replace(char::is_control, ".");
    if v.len() > 40 {
        format!("{text:?}... ({} bytes)", v.len())
    } else {
        format!("{text:?}")
    }
}

/// The values `submit` sends, from its arguments or standard input, in `format`.
fn submit_values(format: &str, args: Vec<String>) -> Result<Vec<Vec<u8>>> {
    use std::io::Read;
    let hex = |k: usize, t: &str| -> Result<Vec<u8>> {
        let t = t.trim();
        if t.len() % 2 != 0 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!(
                "value {k}: not an even number of hex digits: {}",
                shown(t.as_bytes())
            );
        }
        Ok((0..t.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&t[i..i + 2], 16).unwrap_or_default())
            .collect())
    };
    if !args.is_empty() {
        return match format {
            "hex" => args.iter().enumerate().map(|(k, a)| hex(k, a)).collect(),
            "length-prefixed" => bail!("--format length-prefixed reads standard input only"),
            _ => Ok(args.into_iter().map(String::into_bytes).collect()),
        };
    }
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut input)
        .context("cannot read values from standard input")?;
    match format {
        "length-prefixed" => {
            let mut values = Vec::new();
            let mut rest = &input[..];
            while !rest.is_empty() {
                let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                    bail!(
                        "value {}: a length needs 4 bytes, {} left",
                        values.len(),
                        rest.len()
                    );
                };
                let len = u32::from_be_bytes(*len) as usize;
                if tail.len() < len {
                    bail!(
                        "value {}: its length says {len} bytes but {} are left",
                        values.len(),
                        tail.len()
                    );
                }
                values.push(tail[..len].to_vec());
                rest = &tail[len..];
            }
            Ok(values)
        }
        // Lines of bytes: a value need not be UTF-8.
        _ => input
            .split(|b| *b == b'\n')
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(k, l)| match format {
                "hex" => hex(k, &String::from_utf8_lossy(l)),
                _ => Ok(l.to_vec()),
            })
            .collect(),
    }
}

fn submit(config: &Path, timeout: Duration, format: &str, args: Vec<String>) -> Result<()> {
    let cfg = NodeConfig::load(config)?;
    let values = submit_values(format, args)?;
    let node = ethpaxos::app::Embedded::start(cfg)?;
    // All in flight at once; each acknowledged when its own learner delivers it.
    let mut pending = Vec::with_capacity(values.len());
    for (k, v) in values.iter().enumerate() {
        let rx = node
            .submit_async(bytes::Bytes::from(v.clone()))
            .with_context(|| format!("value {k} {}", shown(v)))?;
        pending.push(rx);
    }
    let mut failed = 0;
    for (v, rx) in values.iter().zip(pending) {
        match rx.recv_timeout(timeout) {
            Ok(Ok(seq)) => println!("acknowledged seq {seq}: {}", shown(v)),
            Ok(Err(why)) => {
                failed += 1;
                println!("refused: {}: {why}", shown(v));
            }
            Err(_) => {
                failed += 1;
                println!("no acknowledgement within {timeout:?}: {}", shown(v));
            }
        }
    }
    let stats = node.stop()?;
    eprintln!(
        "{} submitted, {} acknowledged, {failed} not",
        values.len(),
        stats.acknowledged
    );
    if failed > 0 {
        bail!("{failed} of {} values were not acknowledged", values.len());
    }
    Ok(())
}

fn tail(socket: &Path, count: Option<u64>) -> Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    let mut out = std::io::stdout().lock();
    for (seen, line) in (1u64..).zip(BufReader::new(stream).lines()) {
        let line = line.context("stream read failed")?;
        let Some(v) = ethpaxos::app::parse_stream_line(&line) else {
            bail!("not a stream line: {line:?}");
        };
        let text = match std::str::from_utf8(&v.payload) {
            Ok(t) if !t.chars().any(char::is_control) => t.to_string(),
            _ => format!("0x{}", line.rsplit(' ').next().unwrap_or("")),
        };
        writeln!(out, "{} {} {}", v.client, v.seq, text)?;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    out.flush()?;
    Ok(())
}

fn parse_transport(s: &str) -> Result<TransportKind, String> {
    match s {
        "afpacket" => Ok(TransportKind::Afpacket),
        "udp" => Ok(TransportKind::Udp),
        "dpdk" => Ok(TransportKind::Dpdk),
        _ => Err(format!(
            "unknown transport `{s}`; one of: afpacket, udp, dpdk"
        )),
    }
}

fn parse_polling(s: &str) -> Result<Polling, String> {
    match s {
        "adaptive" => Ok(Polling::Adaptive),
        "busy" => Ok(Polling::Busy),
        _ => Err(format!("unknown polling `{s}`; one of: adaptive, busy")),
    }
}

fn parse_stages(s: &str) -> Result<Stages, String> {
    match s {
        "single" => Ok(Stages::Single),
        "staged" => Ok(Stages::Staged),
        _ => Err(format!("unknown stages `{s}`; one of: single, staged")),
    }
}
