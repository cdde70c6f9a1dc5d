//! One node process: the roles its config names, run by the one driver (driver/) on one
//! loop over its transport, or as the staged pipeline (pipeline/). This module builds the
//! node from its config (roles, storage, client sessions, outputs) and runs it.
//!
//! Learners write their delivered stream and clients their acknowledgements to the files the
//! config names, so tests can check them across crashes.

#![forbid(unsafe_code)]

use crate::app::{stream_line, AppLink, StreamServer};
use crate::config::{NodeConfig, Polling, Role, Stages, ValidNodeConfig};
use crate::driver::single::{self, Idle};
use crate::driver::{io, Acked, Driver, Load, NodeStore, RoundStore, Sessions, Sink};
use crate::journal::{DiskFiles, Journal, JournalTail, SnapshotStore};
use crate::metrics::Metrics;
use crate::protocol::{Acceptor, ClientValue, Learner, Position, Proposer};
use crate::storage::{BatchBudget, GroupCommit, RoundFile};
use crate::transport::Transport;
use bytes::Bytes;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::driver::STATUS_EVERY;
pub use crate::driver::{client_id, report_event, write_summary, NodeError, NodeStats};

/// A random number for this process's client sessions, so a restarted node never reuses its
/// predecessor's client ids.
fn session_nonce() -> u32 {
    let mut b = [0u8; 4];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        // No /dev/urandom: the clock's nanoseconds still differ between restarts.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.subsec_nanos() ^ t.as_secs() as u32;
    }
    u32::from_be_bytes(b)
}

/// A node's outputs: the delivered stream and acknowledgements as files, and the stream
/// socket. Flushed every turn: what a client saw acknowledged is on record before it moves
/// on.
pub(crate) struct Outputs {
    delivered: Option<BufWriter<File>>,
    /// The last position the delivered file holds from an earlier run: a learner that
    /// resumes delivers again what its journal had not synced, and the file skips it.
    delivered_through: Option<Position>,
    acked: Option<BufWriter<File>>,
    stream: Option<StreamServer>,
    stream_buf: Vec<u8>,
}

fn open_append(path: &Path) -> Result<BufWriter<File>, NodeError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    Ok(BufWriter::new(f))
}

impl Outputs {
    fn open(
        cfg: &NodeConfig,
        journal: Option<(JournalTail, SnapshotStore)>,
    ) -> Result<Outputs, NodeError> {
        let stream = match &cfg.output.socket {
            Some(path) => Some(
                StreamServer::bind(path, journal, cfg.learner.snapshot_every == 0)
                    .map_err(io(format!("cannot listen on {}", path.display())))?,
            ),
            None => None,
        };
        let delivered_through = match &cfg.output.delivered {
            Some(path) => {
                last_position(path).map_err(io(format!("cannot read {}", path.display())))?
            }
            None => None,
        };
        Ok(Outputs {
            delivered_through,
            delivered: cfg
                .output
                .delivered
                .as_deref()
                .map(open_append)
                .transpose()?,
            acked: cfg
                .output
                .acknowledged
                .as_deref()
                .map(open_append)
                .transpose()?,
            stream,
            stream_buf: Vec::new(),
        })
    }

    /// Stream readers cut off for falling too far behind.
    pub(crate) fn dropped_readers(&self) -> u64 {
        self.stream.as_ref().map_or(0, |s| s.dropped_readers)
    }
}

/// The position on the last whole line of a delivered file (None: no file, or no line).
fn last_position(path: &Path) -> std::io::Result<Option<Position>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(8192)))?;
    let mut bytes = Vec::new();
    f.take(8192).read_to_end(&mut bytes)?;
    let tail = String::from_utf8_lossy(&bytes);
    let whole = tail.rsplit_once('\n').map_or("", |(w, _)| w);
    Ok(whole
        .lines()
        .rev()
        .find_map(|l| l.rsplit(' ').next()?.parse().ok()))
}

impl Sink for Outputs {
    fn delivered(
        &mut self,
        _now: Duration,
        position: Position,
        v: &ClientValue,
    ) -> std::io::Result<()> {
        if let Some(w) = self
            .delivered
            .as_mut()
            .filter(|_| self.delivered_through.is_none_or(|t| position > t))
        {
            let hash = blake3::hash(&v.payload);
            writeln!(
                w,
                "{} {} {} {position}",
                v.client,
                v.seq,
                &hash.to_hex()[..16]
            )?;
        }
        if self.stream.as_ref().is_some_and(StreamServer::wants_lines) {
            self.stream_buf
                .extend_from_slice(stream_line(position, v.client, v.seq, &v.payload).as_bytes());
        }
        Ok(())
    }

    fn acknowledged(&mut self, ack: &Acked) -> std::io::Result<()> {
        if let Some(w) = &mut self.acked {
            writeln!(w, "{} {}", ack.client, ack.seq)?;
        }
        Ok(())
    }

    fn installed(
        &mut self,
        _now: Duration,
        below: Position,
        _app: Option<&Bytes>,
    ) -> std::io::Result<()> {
        if let Some(server) = &mut self.stream {
            server.installed(below);
        }
        Ok(())
    }

    fn end_turn(&mut self) -> std::io::Result<()> {
        if let Some(server) = &mut self.stream {
            server.serve(&self.stream_buf);
            self.stream_buf.clear();
        }
        for w in [&mut self.delivered, &mut self.acked].into_iter().flatten() {
            w.flush()?;
        }
        Ok(())
    }
}

/// A running node's summary file, refreshed every `STATUS_EVERY` with `running` set: what
/// tests and operators read of a live node (who leads, what it counted so far).
pub(crate) struct Status {
    path: Option<std::path::PathBuf>,
    last: Option<Instant>,
}

impl Status {
    pub(crate) fn new(cfg: &NodeConfig) -> Status {
        Status {
            path: cfg.output.summary.clone(),
            last: None,
        }
    }

    /// Writes `stats()` when a refresh is due. A failed write is logged once and not fatal:
    /// the node's work does not depend on it.
    pub(crate) fn refresh(&mut self, stats: impl FnOnce() -> NodeStats) {
        let Some(path) = &self.path else { return };
        if self.last.is_some_and(|t| t.elapsed() < STATUS_EVERY) {
            return;
        }
        let mut s = stats();
        s.running = true;
        if let Err(e) = write_summary(path, &s) {
            tracing::warn!("cannot write output.summary {}: {e}", path.display());
            self.path = None;
        }
        self.last = Some(Instant::now());
    }
}

/// How often a node with neither a proposer nor an application ticks (`Driver::
/// with_coarse_tick`): every 10 ms, but an `async` acceptor store or learner journal syncs on
/// a turn, so no less often than its interval.
fn coarse_tick(cfg: &NodeConfig) -> Duration {
    use crate::storage::FsyncPolicy::Async;
    let me = cfg.me();
    let mut every = Duration::from_millis(10);
    if me.plays(Role::Acceptor) && cfg.storage.fsync_policy == Async {
        every = every.min(Duration::from_millis(cfg.storage.fsync_interval_ms));
    }
    let journal_policy = cfg.learner.fsync_policy.unwrap_or(cfg.storage.fsync_policy);
    if me.plays(Role::Learner) && journal_policy == Async {
        every = every.min(Duration::from_millis(cfg.learner.fsync_interval_ms));
    }
    every
}

/// A node built from its config, ready to run.
pub(crate) struct Node {
    pub(crate) driver: Driver,
    pub(crate) store: NodeStore,
    pub(crate) transport: Transport,
    pub(crate) outputs: Outputs,
}

/// Runs the node until `stop` is set (by SIGTERM in `ethpaxos run`).
pub fn run(cfg: &ValidNodeConfig, stop: &AtomicBool) -> Result<NodeStats, NodeError> {
    run_with(cfg, stop, None)
}

/// Runs the node with an embedded application's requests and delivery stream (app.rs).
pub fn run_with(
    cfg: &ValidNodeConfig,
    stop: &AtomicBool,
    app: Option<AppLink>,
) -> Result<NodeStats, NodeError> {
    // Served until this function returns (the server stops when dropped).
    let (metrics, _server) = match &cfg.metrics_address {
        Some(addr) => {
            let m = Metrics::new(cfg)?;
            let server = crate::metrics::http::MetricsServer::start(addr, m.clone())?;
            (Some(m), Some(server))
        }
        None => (None, None),
    };
    if let Some(&core) = cfg.pipeline.cores.first() {
        // Best effort: a failure to pin leaves the loop where the kernel put it.
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            tracing::warn!("node {}: could not pin to core {core}", cfg.node_id);
        }
    }
    let node = Node::start(cfg, app, metrics.as_ref())?;
    if cfg.pipeline.stages == Stages::Staged {
        let stages = crate::pipeline::stage_count(cfg);
        let cores = cfg.pipeline.cores.len();
        if cores == 0 || cores >= stages {
            return crate::pipeline::run_staged(cfg, stop, node, metrics.as_ref());
        }
        // Fewer cores than stages: the stages share them as one loop rather than as threads
        // taking turns on a core.
        tracing::info!(
            "node {}: {stages} stages on {cores} core(s): running them as one loop on core {}",
            cfg.node_id,
            cfg.pipeline.cores[0]
        );
    }
    let Node {
        mut driver,
        mut store,
        mut transport,
        mut outputs,
    } = node;
    let mut status = Status::new(cfg);
    single::run(
        &mut driver,
        &mut transport,
        &mut store,
        &mut outputs,
        &mut |d, frames| {
            status.refresh(|| {
                let mut s = d.summary();
                s.transport = frames.cloned().unwrap_or_default();
                s
            });
            stop.load(Ordering::Relaxed)
        },
        Instant::now(),
        match cfg.pipeline.polling {
            Polling::Busy => Idle::Busy,
            Polling::Adaptive => Idle::Spin(cfg.pipeline.spin_polls),
        },
    )?;
    driver
        .sync_journal(Duration::MAX)
        .map_err(io("cannot sync the learner journal"))?;
    let mut stats = driver.summary();
    stats.transport = transport.stats().clone();
    stats.dropped_readers = outputs.dropped_readers();
    Ok(stats)
}

impl Node {
    pub(crate) fn start(
        cfg: &NodeConfig,
        app: Option<AppLink>,
        metrics: Option<&Arc<Metrics>>,
    ) -> Result<Node, NodeError> {
        let me = cfg.me();
        let protocol = cfg.effective_protocol();
        let members = cfg.membership();
        let transport = Transport::open(cfg)?;
        let id = cfg.node_id;
        if let Some(dir) = &cfg.storage.path {
            crate::storage::check_writable(dir)?;
        }
        let mut driver = Driver::new(id, &protocol, BatchBudget::of(&cfg.storage))
            .with_coarse_tick(coarse_tick(cfg));
        let mut round = None;
        if me.plays(Role::Proposer) {
            let dir = cfg.storage.path.as_deref().unwrap_or(Path::new("."));
            let file = RoundFile::new(dir, id);
            let stored = file
                .load()
                .map_err(io("cannot read the proposer's round"))?;
            driver = driver.with_proposer(Proposer::new(
                id,
                &protocol,
                members.clone(),
                Duration::ZERO,
                stored,
            ));
            round = Some(RoundStore::File(file));
        }
        let mut votes = None;
        if me.plays(Role::Acceptor) {
            let mut s = cfg.storage.open(id)?;
            let state = s.load()?;
            driver = driver.with_acceptor(Box::new(Acceptor::restore(
                id,
                &protocol,
                members.clone(),
                state,
            )));
            votes = Some(GroupCommit::new(s, &cfg.storage));
        }
        let mut tail = None;
        let learner = |l: Learner| {
            if cfg.learner.snapshot_every == 0 {
                l.needing_app_state()
            } else {
                l
            }
        };
        if me.plays(Role::Learner) {
            match cfg.learner.dir(cfg.storage.path.as_deref(), id) {
                Some(dir) => {
                    let files = DiskFiles::new(&dir).map_err(io(format!(
                        "cannot create the learner journal directory {}",
                        dir.display()
                    )))?;
                    let (mut journal, state, recovery) = Journal::open(
                        Box::new(files),
                        cfg.learner.journal(cfg.storage.fsync_policy),
                        protocol.cluster_id,
                    )?;
                    let store = SnapshotStore::open(&dir.join("snapshots"), protocol.cluster_id)?;
                    let (state, from_image) = journal.resume(state, &store)?;
                    tracing::info!(
                        "node {id}: learner resumes at instance {} (journal {}: {} segment(s), \
                         {} record(s) replayed{}{})",
                        state.next,
                        dir.display(),
                        recovery.segments,
                        recovery.records,
                        recovery
                            .cut
                            .map(|(bytes, why)| format!(
                                ", a torn tail of {bytes} bytes cut: {why}"
                            ))
                            .unwrap_or_default(),
                        from_image
                            .map(|p| format!(", then its newest snapshot at {p}"))
                            .unwrap_or_default()
                    );
                    tail = Some((JournalTail::new(&dir, journal.marks()), store.clone()));
                    driver = driver
                        .with_learner(learner(Learner::restore(
                            id,
                            &protocol,
                            members.clone(),
                            Duration::ZERO,
                            state,
                        )))
                        .with_journal(journal)
                        .with_snapshots(store, cfg.learner.snapshot_every);
                }
                None => {
                    driver = driver
                        .with_learner(learner(Learner::new(
                            id,
                            &protocol,
                            members.clone(),
                            Duration::ZERO,
                        )))
                        .with_snapshots(
                            SnapshotStore::memory(protocol.cluster_id),
                            cfg.learner.snapshot_every,
                        )
                }
            }
        }
        let session = session_nonce();
        let count = if me.plays(Role::Client) {
            cfg.load.clients
        } else {
            0
        };
        let mut sessions = Sessions::new(id, session, count, &protocol, &members.proposers)
            .with_load(Load {
                outstanding: cfg.load.outstanding,
                limit: cfg.load.values_per_client,
                payload: Bytes::from(vec![0x5A; cfg.load.value_size]),
                hold: None,
            })
            .with_warmup(Duration::from_millis(cfg.load.warmup_ms));
        if let Some(mut link) = app {
            if let Some(m) = link.machine.take() {
                driver = driver.with_machine(m).map_err(NodeError::Application)?;
            }
            sessions = sessions.with_app(link, id, session, &protocol, &members.proposers);
        }
        let driver = driver
            .with_sessions(sessions)
            .with_metrics(metrics.map(|m| m.recorder()));
        Ok(Node {
            driver,
            store: NodeStore::new(round, votes),
            transport,
            outputs: Outputs::open(cfg, tail)?,
        })
    }
}
