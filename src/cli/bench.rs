//! `ethpaxos bench`: the thesis' experiment over a grid, with plots.

use super::stop_on_signals;
use anyhow::{bail, Context, Result};
use clap::Args;
use ethpaxos::config::Polling;
use ethpaxos::storage::FsyncPolicy;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Transports, in order: inproc (threads of this process), udp, afpacket, dpdk or
    /// dpdk-virtio (node processes in the namespace testbed), e.g. inproc,afpacket.
    #[arg(long, value_delimiter = ',', default_value = "inproc")]
    pub(crate) transport: Vec<String>,
    /// Client counts, e.g. 1,2,4,8,16,32,64,128,256.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,2,4,8,16,32,64,128,256"
    )]
    pub(crate) clients: Vec<usize>,
    /// Storage modes: none (memory), async, sync.
    #[arg(long, value_delimiter = ',', default_value = "none,async,sync")]
    pub(crate) policies: Vec<FsyncPolicy>,
    /// Values each client keeps outstanding (the thesis: 1).
    #[arg(long, default_value_t = 1)]
    pub(crate) outstanding: usize,
    #[arg(long, default_value_t = 64)]
    pub(crate) value_size: usize,
    /// Per point: warm-up, then the measured window.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) warmup: Duration,
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) duration: Duration,
    /// Group commit: at most this many messages' changes per batch.
    #[arg(long)]
    pub(crate) batch_max_messages: Option<usize>,
    /// Group commit: at most about this many bytes per batch.
    #[arg(long)]
    pub(crate) batch_max_bytes: Option<usize>,
    /// Testbed transports: adaptive or busy.
    #[arg(long, default_value = "adaptive")]
    pub(crate) polling: Polling,
    /// Adaptive polling: empty polls before a node sleeps (`pipeline.spin_polls`).
    #[arg(long, default_value_t = 0)]
    pub(crate) spin_polls: u32,
    /// Largest frame, bytes (`protocol.max_frame`): 9000 for jumbo frames (the testbed's
    /// veths get the MTU to carry them).
    #[arg(long, default_value_t = ethpaxos::protocol::limits::DEFAULT_MAX_FRAME)]
    pub(crate) max_frame: usize,
    #[arg(long, default_value = "bench-results")]
    pub(crate) out: PathBuf,
    /// Run nothing: draw the plots again from --out/results.json.
    #[arg(long)]
    pub(crate) replot: bool,
}

pub(crate) fn run(args: BenchArgs) -> Result<()> {
    if args.replot {
        let n = ethpaxos::bench::replot(&args.out)?;
        println!("{n} points drawn again into {}", args.out.display());
        return Ok(());
    }
    let transports = args
        .transport
        .iter()
        .map(|t| {
            ethpaxos::bench::BenchTransport::from_name(t).with_context(|| {
                format!("unknown transport `{t}`; one of: inproc, udp, afpacket, dpdk, dpdk-virtio")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients: give counts of at least 1, e.g. 1,2,4");
    }
    if args.outstanding == 0 {
        bail!("--outstanding must be at least 1");
    }
    let (lo, hi) = (
        ethpaxos::protocol::limits::MIN_MAX_FRAME,
        ethpaxos::protocol::limits::MAX_MAX_FRAME,
    );
    if !(lo..=hi).contains(&args.max_frame) {
        bail!("--max-frame {}: give {lo} to {hi} bytes", args.max_frame);
    }
    let spec = ethpaxos::bench::BenchSpec {
        transports,
        clients: args.clients,
        policies: args.policies,
        outstanding: args.outstanding,
        value_size: args.value_size,
        warmup: args.warmup,
        duration: args.duration,
        batch_max_messages: args.batch_max_messages,
        batch_max_bytes: args.batch_max_bytes,
        polling: args.polling,
        spin_polls: args.spin_polls,
        max_frame: args.max_frame,
        out: args.out,
        exe: std::env::current_exe().context("cannot find this executable")?,
    };
    run_spec(&spec)
}

fn run_spec(spec: &ethpaxos::bench::BenchSpec) -> Result<()> {
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
    println!("| transport | mode | clients | values/s | mean | p50 | p99 | p99.9 | CPU % (proposer/acceptors/learner/client) | frames/value | CPU us/value | wake-ups/value | syscalls/value |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let points = ethpaxos::bench::run(spec, &stop, |p, _k, _n| {
        let cpu = |r: &str| p.cpu_percent.get(r).copied().unwrap_or(0.0);
        let row = format!(
            "| {} | {} | {} | {:.0} | {:.0} us | {:.0} us | {:.0} us | {:.0} us | {:.0}/{:.0}/{:.0}/{:.0} | {:.2} | {:.1} | {:.2} | {} |",
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
            cpu("client"),
            p.frames_per_value,
            p.cpu_us_per_value,
            p.wakeups_per_value,
            p.syscalls_per_value
                .map_or("-".to_string(), |s| format!("{s:.2}")),
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
        "\n{} points; results.csv, results.json and {} in {}",
        points.len(),
        ethpaxos::bench::plot::FIGURES
            .iter()
            .map(|f| f.file)
            .collect::<Vec<_>>()
            .join(", "),
        spec.out.display()
    );
    if stop.load(std::sync::atomic::Ordering::Relaxed) {
        bail!("interrupted after {} of {total} points", points.len());
    }
    Ok(())
}
