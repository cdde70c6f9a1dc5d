//! What a node did (its stop summary and `output.summary` JSON), and what an operator must
//! see of its events. Every runtime counts into these the same way (driver/mod.rs).

use crate::protocol::{Event, NodeId};
use crate::transport::TransportStats;

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
    /// Set when this learner needed instances the acceptors had trimmed and no peer learner's
    /// journal still held: it cannot catch up by itself (it needs a snapshot).
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
    /// While the node runs its summary file is refreshed every `STATUS_EVERY` with this set;
    /// the summary written when it stops has it unset.
    pub running: bool,
    /// The round of this proposer's ballot while it leads (None: it does not lead).
    pub leading_round: Option<u32>,
    /// The learner's delivery point and what of it is durable (None: no learner).
    pub learner: Option<LearnerSummary>,
}

/// Where a learner stands.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct LearnerSummary {
    /// Where it started: the delivery point its journal held (0: a new learner, or none).
    pub resumed_at: u64,
    /// Values it delivered out of peer learners' journals (acceptors had trimmed them).
    pub peer_values: u64,
    /// Every instance below this was delivered.
    pub delivered_below: u64,
    /// ... and below this, durable in its journal: what it reports for trim, and where it
    /// resumes after a restart.
    pub durable_below: u64,
    /// None: the learner keeps no journal (it restarts at instance 0).
    pub journal: Option<JournalSummary>,
    /// None: the learner keeps no snapshots.
    pub snapshots: Option<SnapshotSummary>,
}

/// A learner's snapshot images.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SnapshotSummary {
    /// The newest image it holds covers every instance below this (0: none).
    pub newest_below: u64,
    /// Images it took of its own state (`learner.snapshot_every`).
    pub taken: u64,
    /// Images it stored, its own, its application's and installed ones.
    pub saved: u64,
    /// Peers' images it installed, and refused (damaged, foreign, lacking the application's
    /// state).
    pub installed: u64,
    pub refused: u64,
    /// Where the last image it installed stood (`INSTANCE.INDEX`): its stream starts over
    /// there. Its size, and how long its transfer took (first chunk asked to image checked).
    pub installed_at: Option<String>,
    pub installed_bytes: u64,
    pub install_ms: u64,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct JournalSummary {
    /// The first instance the journal still holds (older positions are gone by retention).
    pub oldest: u64,
    #[serde(flatten)]
    pub stats: crate::journal::JournalStats,
}

/// How often a running node refreshes its summary file (`output.summary`).
pub const STATUS_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Writes a node's summary as JSON to `path`, atomically (a reader never sees half of one).
pub fn write_summary(path: &std::path::Path, stats: &NodeStats) -> std::io::Result<()> {
    let json = serde_json::to_string_pretty(stats).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json + "\n")?;
    std::fs::rename(&tmp, path)
}

impl NodeStats {
    /// Adds what another part of the same node counted (a staged node's stages).
    pub fn absorb(&mut self, o: &NodeStats) {
        self.transport.add(&o.transport);
        self.commits += o.commits;
        self.committed_changes += o.committed_changes;
        self.delivered += o.delivered;
        self.acknowledged += o.acknowledged;
        self.submitted += o.submitted;
        self.shed += o.shed;
        self.trimmed_out = self.trimmed_out.or(o.trimmed_out);
        self.leading_round = self.leading_round.or(o.leading_round);
        if self.learner.is_none() {
            self.learner = o.learner.clone();
        }
        self.dropped_readers += o.dropped_readers;
        let (a, b) = (&mut self.acceptor, &o.acceptor);
        a.refused_oversized += b.refused_oversized;
        a.refused_top_round += b.refused_top_round;
        a.deferred_prepares += b.deferred_prepares;
        a.trim = a.trim.max(b.trim);
        a.votes_held += b.votes_held;
    }
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
                "  STRANDED: this learner needed instance {needed}, which acceptors had trimmed and no peer's journal held"
            )?;
        }
        if self.dropped_readers > 0 {
            writeln!(f, "  stream readers cut off: {}", self.dropped_readers)?;
        }
        Ok(())
    }
}

/// Prints what an operator must see of an event: leadership changes, and a learner that
/// cannot catch up.
pub fn report_event(id: NodeId, e: &Event) {
    match e {
        Event::BecameLeader { ballot } => tracing::info!("node {id}: leading with ballot {ballot}"),
        Event::FirstDecision { ballot, instance } => tracing::info!(
            "node {id}: first decision at ballot {ballot} (instance {instance}): the leader change is complete"
        ),
        Event::SteppedDown { higher } => {
            tracing::info!("node {id}: stepped down, ballot {higher} is higher")
        }
        Event::Trimmed { needed, trim } => tracing::warn!(
            "node {id}: this learner needs instance {needed} but acceptors trimmed everything below {trim}: fetching it from peer learners' journals"
        ),
        Event::Stranded { needed } => tracing::error!(
            "node {id}: this learner needs instance {needed}, which acceptors trimmed, no peer learner's journal still holds and no peer's snapshot covers; it asks again every learner timeout (docs/learners.md)"
        ),
        Event::Installed {
            below,
            from,
            bytes,
            took,
        } => tracing::warn!(
            "node {id}: installed learner {from}'s snapshot ({bytes} bytes in {} ms): this learner now stands at {below}; values before it were not delivered here",
            took.as_millis()
        ),
        Event::SnapshotRefused { from, why } => tracing::warn!(
            "node {id}: refused learner {from}'s snapshot: {why}; asking another peer"
        ),
        Event::NoRoundLeft { highest } => tracing::error!(
            "node {id}: cannot prepare: ballot {highest} is at the top of the round range (a forged or runaway ballot); frame authentication prevents this (docs/nodes.md)"
        ),
        Event::Shed { .. } | Event::Decided { .. } | Event::FromPeer { .. } => {}
    }
}
