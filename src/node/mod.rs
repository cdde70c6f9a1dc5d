//! One node process: the roles its config names, driven by one loop over the UDP transport.
//! Each turn it handles a burst of frames, ticks the roles, commits what the acceptor changed
//! (group commit, synced per policy) and its proposer's round, and only then sends. Messages
//! a node addresses to itself (a replica's proposer to its own acceptor) never touch the
//! network. Learners write their delivered stream and clients their acknowledgements to the
//! files the config names, so tests can check them across crashes.

#![forbid(unsafe_code)]

use crate::app::{stream_line, AppLink, DeliveredValue, StreamServer};
use crate::config::{NodeConfig, Polling, Role, Stages};
use crate::metrics::{Metrics, Recorder};
use crate::protocol::{
    Acceptor, Actions, Change, Client, Envelope, Event, Learner, Message, NodeId, Proposer,
};
use crate::storage::{BatchBudget, GroupCommit, RoundFile, StorageError};
use crate::transport::{Transport, TransportError, TransportStats};
use bytes::Bytes;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("acceptor storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Io { what, source }
}

/// What a node did, printed when it stops (and written as JSON to `output.summary`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct NodeStats {
    pub transport: TransportStats,
    pub commits: u64,
    pub committed_changes: u64,
    pub delivered: u64,
    pub acknowledged: u64,
    pub submitted: u64,
    /// Client values the leader shed because its queue was full (clients resend them).
    pub shed: u64,
    /// Set when this learner needed instances the acceptors had trimmed: it cannot catch up
    /// by itself (it needs its application state restored from a snapshot).
    pub trimmed_out: Option<u64>,
    /// The acceptor's refusals: forged or oversized votes, top-round ballots, and prepares
    /// put off by the leader lease.
    pub acceptor: crate::protocol::AcceptorCounters,
    /// Stream readers (output.socket) disconnected for falling too far behind.
    pub dropped_readers: u64,
    /// Client sessions: submit-to-delivery latency of acknowledged values after
    /// `load.warmup_ms`, microseconds.
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_mean_us: u64,
    pub latency_p999_us: u64,
}

impl std::fmt::Display for NodeStats {
    /// The stop summary a person reads (the JSON in `output.summary` is for programs).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = &self.transport;
        writeln!(f, "  frames: {} sent, {} received", t.sent, t.received)?;
        let drops = [
            ("bad frame", t.dropped_bad_frame),
            ("oversized", t.dropped_oversized),
            ("foreign cluster", t.dropped_foreign_cluster),
            ("non-member", t.dropped_non_member),
            ("unauthenticated", t.dropped_unauthenticated),
            ("not for us", t.dropped_not_for_us),
            ("own MAC", t.dropped_own_mac),
            ("ring full", t.shed_ring_full),
            ("unencodable (outgoing)", t.dropped_unencodable),
            ("send errors", t.send_errors),
            ("link down", t.link_down),
        ];
        let shown: Vec<String> = drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(what, n)| format!("{n} {what}"))
            .collect();
        if !shown.is_empty() {
            writeln!(f, "  dropped: {}", shown.join(", "))?;
        }
        if self.commits > 0 {
            writeln!(
                f,
                "  storage: {} group commits, {} changes",
                self.commits, self.committed_changes
            )?;
        }
        let a = &self.acceptor;
        if self.commits > 0 || a.votes_held > 0 {
            writeln!(
                f,
                "  acceptor log: {} votes held above trim point {}",
                a.votes_held, a.trim
            )?;
        }
        if a.refused_oversized + a.refused_top_round + a.deferred_prepares > 0 {
            writeln!(
                f,
                "  acceptor: refused {} oversized 2a and {} top-round ballots; put off {} prepares (leader lease)",
                a.refused_oversized, a.refused_top_round, a.deferred_prepares
            )?;
        }
        writeln!(
            f,
            "  values: {} submitted, {} acknowledged, {} delivered, {} shed",
            self.submitted, self.acknowledged, self.delivered, self.shed
        )?;
        if self.acknowledged > 0 {
            writeln!(
                f,
                "  client latency: p50 {} us, p99 {} us, p99.9 {} us, mean {} us",
                self.latency_p50_us,
                self.latency_p99_us,
                self.latency_p999_us,
                self.latency_mean_us
            )?;
        }
        if let Some(needed) = self.trimmed_out {
            writeln!(
                f,
                "  TRIMMED OUT: this learner needed instance {needed}, which acceptors had trimmed"
            )?;
        }
        if self.dropped_readers > 0 {
            writeln!(f, "  stream readers cut off: {}", self.dropped_readers)?;
        }
        Ok(())
    }
}

/// A client's id: node id (16 bits), this process's session (32 random bits), client index
/// (16 bits). Learners deliver each (client, seq) once, so a restarted node must not reuse
/// its predecessor's ids: its sequence numbers start again at 0.
pub fn client_id(node: NodeId, session: u32, k: usize) -> u64 {
    ((node as u64) << 48) | ((session as u64) << 16) | (k as u64 & 0xFFFF)
}

/// Prints what an operator must see of an event: leadership changes, and a learner that
/// cannot catch up.
pub(crate) fn report_event(id: NodeId, e: &Event) {
    match e {
        Event::BecameLeader { ballot } => tracing::info!("node {id}: leading with ballot {ballot}"),
        Event::FirstDecision { ballot, instance } => tracing::info!(
            "node {id}: first decision at ballot {ballot} (instance {instance}): the leader change is complete"
        ),
        Event::SteppedDown { higher } => {
            tracing::info!("node {id}: stepped down, ballot {higher} is higher")
        }
        Event::Trimmed { needed, trim } => tracing::error!(
            "node {id}: this learner needs instance {needed} but acceptors trimmed everything below {trim}; restore its application state from a snapshot at or past {trim}"
        ),
        Event::NoRoundLeft { highest } => tracing::error!(
            "node {id}: cannot prepare: ballot {highest} is at the top of the round range (a forged or runaway ballot); frame authentication prevents this (docs/nodes.md)"
        ),
        Event::Shed { .. } | Event::Decided { .. } => {}
    }
}

/// A proposer's counts and gauges into a recorder (not yet published).
pub(crate) fn proposer_metrics(p: &mut Proposer, m: &mut Recorder) {
    for d in p.take_phase2() {
        m.phase2(d);
    }
    let pc = p.counters();
    let c = &mut m.counters;
    c.instances_opened = pc.instances_opened;
    c.instances_decided = pc.instances_decided;
    c.retransmissions = pc.retransmissions;
    c.leader_changes = pc.leader_changes;
    let g = &mut c.gauges;
    g.proposer_ballot = Some(p.highest_ballot().round as u64);
    g.leader = Some(p.known_leader().map_or(0, u64::from));
    g.is_leader = Some(p.is_leader());
    g.proposer_decided = Some(p.decided_below());
    g.in_flight = Some(p.open_instances() as u64);
}

/// An acceptor's gauges into a recorder (not yet published).
pub(crate) fn acceptor_metrics(a: &Acceptor, m: &mut Recorder) {
    let g = &mut m.counters.gauges;
    g.acceptor_ballot = Some(a.promised().round as u64);
    g.trim = Some(a.state().trim);
}

/// Makes `changes` durable: the proposer's round to its file, the acceptor's changes in one
/// group commit under the fsync policy. Empties `changes`.
pub(crate) fn make_durable(
    round_file: &Option<RoundFile>,
    storage: &mut Option<GroupCommit>,
    now: Duration,
    changes: &mut Vec<Change>,
    stats: &mut NodeStats,
    metrics: Option<&mut Recorder>,
) -> Result<(), NodeError> {
    let mut round = None;
    changes.retain(|c| match c {
        Change::ProposerRound(r) => {
            round = Some(*r);
            false
        }
        _ => true,
    });
    if let (Some(r), Some(f)) = (round, round_file) {
        f.store(r)
            .map_err(io("cannot store the proposer's round"))?;
    }
    if let Some(stage) = storage {
        let report = stage.commit(now, changes)?;
        if report.changes > 0 {
            stats.commits += 1;
            stats.committed_changes += report.changes as u64;
        }
        if let Some(m) = metrics {
            m.commit(&report);
        }
    }
    changes.clear();
    Ok(())
}

/// Empty polls before an adaptive loop sleeps: a few tens of microseconds.
pub(crate) const ADAPTIVE_SPINS: u32 = 50;

/// The embedded application's client session index.
const APP_CLIENT: usize = 0xFFFF;

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

/// An embedded application's requests and its waiting acknowledgements.
struct App {
    link: AppLink,
    client: Client,
    waiting: HashMap<u64, crossbeam_channel::Sender<Result<u64, String>>>,
}

pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) transport: Transport,
    pub(crate) proposer: Option<Proposer>,
    pub(crate) round_file: Option<RoundFile>,
    pub(crate) acceptor: Option<Acceptor>,
    pub(crate) storage: Option<GroupCommit>,
    learner: Option<Learner>,
    clients: Vec<Client>,
    submitted: Vec<u64>,
    payload: Bytes,
    delivered_out: Option<BufWriter<File>>,
    acked_out: Option<BufWriter<File>>,
    stream: Option<StreamServer>,
    stream_buf: Vec<u8>,
    app: Option<App>,
    latency: hdrhistogram::Histogram<u64>,
    /// Latencies before this (since the start) are left out of `latency`.
    warmup: Duration,
    pub(crate) stats: NodeStats,
    /// This loop's (or stage's) metrics, when the node serves them.
    pub(crate) metrics: Option<Recorder>,
}

fn open_append(path: &Path) -> Result<BufWriter<File>, NodeError> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io(format!("cannot open {}", path.display())))?;
    Ok(BufWriter::new(f))
}

/// Runs the node until `stop` is set (by SIGTERM in `ethpaxos run`).
pub fn run(cfg: &NodeConfig, stop: &AtomicBool) -> Result<NodeStats, NodeError> {
    run_with(cfg, stop, None)
}

/// Runs the node with an embedded application's requests and delivery stream (app.rs).
pub fn run_with(
    cfg: &NodeConfig,
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
    if cfg.pipeline.stages == Stages::Staged {
        let stages = crate::pipeline::stage_count(cfg);
        let cores = cfg.pipeline.cores.len();
        if cores == 0 || cores >= stages {
            return crate::pipeline::run_staged(cfg, stop, app, metrics.as_ref());
        }
        // Fewer cores than stages: the stages share them as one loop rather than as threads
        // taking turns on a core.
        tracing::info!(
            "node {}: {stages} stages on {cores} core(s): running them as one loop on core {}",
            cfg.node_id,
            cfg.pipeline.cores[0]
        );
    }
    let busy = cfg.pipeline.polling == Polling::Busy;
    let mut idle_spins = 0u32;
    let mut node = Node::start(cfg, app, metrics.as_ref())?;
    let start = Instant::now();
    let tick = Duration::from_millis(1);
    let mut next_tick = Duration::ZERO;
    let mut out = Actions::new();
    let budget = BatchBudget::of(&cfg.storage);
    while !stop.load(Ordering::Relaxed) {
        let now = start.elapsed();
        node.submit(cfg, now, &mut out);
        node.take_app_requests(now, &mut out);
        // Busy: never sleep. Adaptive: poll without waiting for a while after the last
        // frame (a waiting thread costs ~20 us to wake here), then sleep until a frame or
        // the next tick.
        let wait = if busy || idle_spins < ADAPTIVE_SPINS {
            Duration::ZERO
        } else {
            next_tick.saturating_sub(now).max(Duration::from_micros(50))
        };
        let mut got = node.transport.recv(wait)?;
        idle_spins = if got.is_some() {
            0
        } else {
            idle_spins.saturating_add(1)
        };
        let mut burst = budget.fresh();
        while let Some((from, msg)) = got {
            if let Some(m) = &mut node.metrics {
                m.message_in(msg.kind());
            }
            let before = out.persist.len();
            node.dispatch(start.elapsed(), from, msg, &mut out);
            if !burst.add(&out.persist[before..]) {
                break;
            }
            got = node.transport.recv(Duration::ZERO)?;
        }
        let now = start.elapsed();
        if now >= next_tick {
            node.tick(now, &mut out);
            next_tick = now + tick;
            node.publish_metrics(false);
        }
        node.flush(now, &mut out)?;
    }
    node.finish()
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
        let (mut proposer, mut round_file) = (None, None);
        if me.plays(Role::Proposer) {
            let dir = cfg.storage.path.as_deref().unwrap_or(Path::new("."));
            let file = RoundFile::new(dir, id);
            let round = file
                .load()
                .map_err(io("cannot read the proposer's round"))?;
            proposer = Some(Proposer::new(
                id,
                &protocol,
                members.clone(),
                Duration::ZERO,
                round,
            ));
            if metrics.is_some() {
                if let Some(p) = &mut proposer {
                    p.record_phase2();
                }
            }
            round_file = Some(file);
        }
        let (mut acceptor, mut storage) = (None, None);
        if me.plays(Role::Acceptor) {
            let mut s = cfg.storage.open(id)?;
            let state = s.load()?;
            acceptor = Some(Acceptor::restore(id, &protocol, members.clone(), state));
            storage = Some(GroupCommit::new(s, &cfg.storage));
        }
        let learner = me
            .plays(Role::Learner)
            .then(|| Learner::new(id, &protocol, members.clone(), Duration::ZERO));
        let session = session_nonce();
        let clients: Vec<Client> = if me.plays(Role::Client) {
            (0..cfg.load.clients)
                .map(|k| {
                    Client::new(
                        client_id(id, session, k),
                        &protocol,
                        members.proposers.clone(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let app = app.map(|link| App {
            link,
            client: Client::new(
                client_id(id, session, APP_CLIENT),
                &protocol,
                members.proposers.clone(),
            ),
            waiting: HashMap::new(),
        });
        let stream = match &cfg.output.socket {
            Some(path) => Some(
                StreamServer::bind(path)
                    .map_err(io(format!("cannot listen on {}", path.display())))?,
            ),
            None => None,
        };
        Ok(Node {
            id,
            transport,
            proposer,
            round_file,
            acceptor,
            storage,
            learner,
            submitted: vec![0; clients.len()],
            clients,
            payload: Bytes::from(vec![0x5A; cfg.load.value_size]),
            delivered_out: cfg
                .output
                .delivered
                .as_deref()
                .map(open_append)
                .transpose()?,
            acked_out: cfg
                .output
                .acknowledged
                .as_deref()
                .map(open_append)
                .transpose()?,
            stream,
            stream_buf: Vec::new(),
            app,
            // Bounded up front: saturating_record clamps to the current bound, and a histogram
            // that starts tiny and grows on demand would clamp every value to 2 ms.
            latency: hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(
                |e| NodeError::Io {
                    what: "latency histogram".into(),
                    source: std::io::Error::other(e.to_string()),
                },
            )?,
            warmup: Duration::from_millis(cfg.load.warmup_ms),
            stats: NodeStats::default(),
            metrics: metrics.map(|m| m.recorder()),
        })
    }

    /// Submits what the embedded application asked for; a value the client session refuses
    /// (too large, too many outstanding) is answered at once with the reason.
    pub(crate) fn take_app_requests(&mut self, now: Duration, out: &mut Actions) {
        let Some(app) = &mut self.app else { return };
        while let Ok(req) = app.link.requests.try_recv() {
            match app.client.submit(now, req.value) {
                Ok(seq) => {
                    app.waiting.insert(seq, req.ack);
                    self.stats.submitted += 1;
                }
                Err(e) => {
                    let _ = req.ack.send(Err(e.to_string()));
                }
            }
        }
        app.client.flush(out);
    }

    /// Tops every client up to its outstanding values.
    pub(crate) fn submit(&mut self, cfg: &NodeConfig, now: Duration, out: &mut Actions) {
        let limit = cfg.load.values_per_client;
        for (k, c) in self.clients.iter_mut().enumerate() {
            while c.outstanding() < cfg.load.outstanding
                && (limit == 0 || self.submitted[k] < limit)
            {
                if c.submit(now, self.payload.clone()).is_err() {
                    break;
                }
                self.submitted[k] += 1;
                self.stats.submitted += 1;
            }
            c.flush(out);
        }
    }

    pub(crate) fn dispatch(
        &mut self,
        now: Duration,
        from: NodeId,
        msg: Message,
        out: &mut Actions,
    ) {
        match msg {
            Message::Prepare { .. } | Message::CatchupRequest { .. } | Message::Trim { .. } => {
                if let Some(a) = &mut self.acceptor {
                    a.handle(now, from, msg, out);
                }
            }
            Message::Accept { .. } => {
                if let Some(l) = &mut self.learner {
                    l.handle(now, from, msg.clone(), out);
                }
                if let Some(a) = &mut self.acceptor {
                    a.handle(now, from, msg, out);
                }
            }
            Message::Heartbeat { .. } => {
                if let Some(a) = &mut self.acceptor {
                    a.handle(now, from, msg.clone(), out);
                }
                if let Some(l) = &mut self.learner {
                    l.handle(now, from, msg.clone(), out);
                }
                if let Some(p) = &mut self.proposer {
                    p.handle(now, from, msg, out);
                }
            }
            Message::Accepted { .. } => {
                if let Some(l) = &mut self.learner {
                    l.handle(now, from, msg.clone(), out);
                }
                if let Some(p) = &mut self.proposer {
                    p.handle(now, from, msg, out);
                }
            }
            Message::Promise { .. }
            | Message::Reject { .. }
            | Message::ClientRequest { .. }
            | Message::Progress { .. } => {
                if let Some(p) = &mut self.proposer {
                    p.handle(now, from, msg, out);
                }
            }
            Message::CatchupReply { .. } => {
                if let Some(l) = &mut self.learner {
                    l.handle(now, from, msg, out);
                }
            }
            Message::Redirect { client, .. } => {
                if let Some(c) = self.clients.iter_mut().find(|c| c.id() == client) {
                    c.handle(&msg);
                }
                if let Some(app) = self.app.as_mut().filter(|a| a.client.id() == client) {
                    app.client.handle(&msg);
                }
            }
        }
    }

    pub(crate) fn tick(&mut self, now: Duration, out: &mut Actions) {
        if let Some(p) = &mut self.proposer {
            p.tick(now, out);
        }
        if let Some(l) = &mut self.learner {
            l.tick(now, out);
        }
        self.clients.iter_mut().for_each(|c| c.tick(now, out));
        if let Some(app) = &mut self.app {
            app.client.tick(now, out);
        }
    }

    /// Makes this turn's changes durable, then sends; self-addressed messages are handled at
    /// once, which may produce more changes and messages. After `SELF_ROUNDS` rounds what
    /// they produced stays in `out` for the next turn (its changes are made durable before
    /// its messages leave, as always): nothing is dropped, and a turn stays short.
    fn flush(&mut self, now: Duration, out: &mut Actions) -> Result<(), NodeError> {
        const SELF_ROUNDS: usize = 64;
        for _ in 0..SELF_ROUNDS {
            self.persist(now, out)?;
            self.deliver(now, out)?;
            let sends: Vec<Envelope> = out.send.drain(..).collect();
            self.report(out.events.drain(..));
            if sends.is_empty() {
                break;
            }
            for env in sends {
                if env.to == self.id {
                    self.dispatch(now, self.id, env.msg, out);
                } else {
                    if let Some(m) = &mut self.metrics {
                        m.message_out(env.msg.kind());
                    }
                    self.transport.send(&env)?;
                }
            }
        }
        self.transport.flush()?;
        Ok(())
    }

    /// What an operator must see: leadership changes, and a learner that cannot catch up.
    pub(crate) fn report(&mut self, events: impl Iterator<Item = Event>) {
        for e in events {
            match &e {
                Event::Trimmed { needed, .. } => self.stats.trimmed_out = Some(*needed),
                Event::Shed { values } => self.stats.shed += *values as u64,
                Event::Decided { value, .. } => {
                    if let Some(m) = &mut self.metrics {
                        m.counters.decided_values += value.len() as u64;
                    }
                }
                _ => {}
            }
            report_event(self.id, &e);
        }
    }

    fn persist(&mut self, now: Duration, out: &mut Actions) -> Result<(), NodeError> {
        make_durable(
            &self.round_file,
            &mut self.storage,
            now,
            &mut out.persist,
            &mut self.stats,
            self.metrics.as_mut(),
        )
    }

    pub(crate) fn deliver(&mut self, now: Duration, out: &mut Actions) -> Result<(), NodeError> {
        for d in out.deliver.drain(..) {
            for v in &d.values {
                self.stats.delivered += 1;
                if let Some(w) = &mut self.delivered_out {
                    let hash = blake3::hash(&v.payload);
                    writeln!(w, "{} {} {}", v.client, v.seq, &hash.to_hex()[..16])
                        .map_err(io("cannot write the delivered stream"))?;
                }
                if self.stream.is_some() {
                    self.stream_buf
                        .extend_from_slice(stream_line(v.client, v.seq, &v.payload).as_bytes());
                }
                if let Some(app) = &mut self.app {
                    let _ = app.link.deliveries.send(DeliveredValue {
                        client: v.client,
                        seq: v.seq,
                        payload: v.payload.clone(),
                    });
                    if app.client.id() == v.client && app.client.on_delivered(now, v.seq).is_some()
                    {
                        self.stats.acknowledged += 1;
                        if let Some(ack) = app.waiting.remove(&v.seq) {
                            let _ = ack.send(Ok(v.seq));
                        }
                    }
                }
                let Some(c) = self.clients.iter_mut().find(|c| c.id() == v.client) else {
                    continue;
                };
                if let Some(latency) = c.on_delivered(now, v.seq) {
                    self.stats.acknowledged += 1;
                    if let Some(m) = &mut self.metrics {
                        m.client_latency(latency);
                    }
                    if now >= self.warmup {
                        self.latency.saturating_record(latency.as_micros() as u64);
                    }
                    if let Some(w) = &mut self.acked_out {
                        writeln!(w, "{} {}", v.client, v.seq)
                            .map_err(io("cannot write acknowledgements"))?;
                    }
                }
            }
        }
        if let Some(server) = &mut self.stream {
            server.publish(&self.stream_buf);
            self.stream_buf.clear();
            self.stats.dropped_readers = server.dropped_readers;
        }
        // Flushed every turn: what a client saw acknowledged is on record before it moves on.
        for w in [&mut self.delivered_out, &mut self.acked_out]
            .into_iter()
            .flatten()
        {
            w.flush().map_err(io("cannot flush an output file"))?;
        }
        Ok(())
    }

    /// Publishes this loop's counts and gauges to its metrics shard, when one is due (or
    /// `now`).
    pub(crate) fn publish_metrics(&mut self, now: bool) {
        let Some(m) = &mut self.metrics else { return };
        if !now && !m.due() {
            return;
        }
        let c = &mut m.counters;
        c.transport = self.transport.stats().clone();
        c.submitted = self.stats.submitted;
        c.acknowledged = self.stats.acknowledged;
        c.delivered = self.stats.delivered;
        c.shed = self.stats.shed;
        c.commits = self.stats.commits;
        c.committed_changes = self.stats.committed_changes;
        if let Some(p) = &mut self.proposer {
            proposer_metrics(p, m);
        }
        if let Some(a) = &self.acceptor {
            acceptor_metrics(a, m);
        }
        if let Some(l) = &self.learner {
            m.counters.gauges.learner_decided = Some(l.known_decided());
            m.counters.gauges.delivered = Some(l.next_instance());
            m.counters.gauges.trimmed_out = Some(u64::from(l.trimmed().is_some()));
        }
        m.publish();
    }

    pub(crate) fn finish(mut self) -> Result<NodeStats, NodeError> {
        self.publish_metrics(true);
        if let Some(s) = &mut self.storage {
            s.sync()?;
        }
        for w in [&mut self.delivered_out, &mut self.acked_out]
            .into_iter()
            .flatten()
        {
            w.flush().map_err(io("cannot flush an output file"))?;
        }
        self.stats.transport = self.transport.stats().clone();
        if let Some(a) = &self.acceptor {
            self.stats.acceptor = a.counters();
        }
        self.stats.latency_p50_us = self.latency.value_at_quantile(0.5);
        self.stats.latency_p99_us = self.latency.value_at_quantile(0.99);
        self.stats.latency_mean_us = self.latency.mean() as u64;
        self.stats.latency_p999_us = self.latency.value_at_quantile(0.999);
        Ok(self.stats)
    }
}
