//! The hot path of the metrics: what one loop or pipeline stage counts, in plain integers
//! and thread-local histograms, and publishes to its shard a few times a second.

use crate::protocol::MessageKind;
use crate::storage::CommitReport;
use crate::transport::TransportStats;
use prometheus::local::LocalHistogram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Gauges a thread knows; `None`: not this thread's to say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Round of the highest ballot the proposer has seen or used.
    pub proposer_ballot: Option<u64>,
    /// Round of the ballot the acceptor promised.
    pub acceptor_ballot: Option<u64>,
    /// The leader the proposer knows of (0: none).
    pub leader: Option<u64>,
    pub is_leader: Option<bool>,
    /// Every instance below is decided, as the proposer knows it.
    pub proposer_decided: Option<u64>,
    /// Every instance below is decided, as the learner knows it.
    pub learner_decided: Option<u64>,
    /// Every instance below is delivered here.
    pub delivered: Option<u64>,
    /// Every instance below is delivered and durable in the learner's journal.
    pub learner_durable: Option<u64>,
    /// The first instance the learner's journal still holds.
    pub journal_oldest: Option<u64>,
    /// 1 when the learner needs instances acceptors trimmed.
    pub trimmed_out: Option<u64>,
    /// The acceptor's trim point.
    pub trim: Option<u64>,
    pub in_flight: Option<u64>,
}

/// What one thread counts. Plain integers: only their owner writes them.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub transport: TransportStats,
    /// By `MessageKind::index`.
    pub messages_in: [u64; MessageKind::ALL.len()],
    pub messages_out: [u64; MessageKind::ALL.len()],
    pub submitted: u64,
    pub acknowledged: u64,
    pub decided_values: u64,
    pub delivered: u64,
    pub shed: u64,
    pub instances_opened: u64,
    pub instances_decided: u64,
    pub retransmissions: u64,
    pub leader_changes: u64,
    pub commits: u64,
    pub committed_changes: u64,
    /// The acceptor's refusals (`protocol::AcceptorCounters`).
    pub refused_oversized: u64,
    pub refused_top_round: u64,
    pub deferred_prepares: u64,
    /// The learner's journal (its owner's totals, not increments).
    pub journal: crate::journal::JournalStats,
    pub gauges: Gauges,
}

impl Counters {
    pub(super) fn add(&mut self, o: &Counters) {
        self.transport.add(&o.transport);
        for k in 0..MessageKind::ALL.len() {
            self.messages_in[k] += o.messages_in[k];
            self.messages_out[k] += o.messages_out[k];
        }
        self.submitted += o.submitted;
        self.acknowledged += o.acknowledged;
        self.decided_values += o.decided_values;
        self.delivered += o.delivered;
        self.shed += o.shed;
        self.instances_opened += o.instances_opened;
        self.instances_decided += o.instances_decided;
        self.retransmissions += o.retransmissions;
        self.leader_changes += o.leader_changes;
        self.commits += o.commits;
        self.committed_changes += o.committed_changes;
        self.refused_oversized += o.refused_oversized;
        self.refused_top_round += o.refused_top_round;
        self.deferred_prepares += o.deferred_prepares;
        let (j, k) = (&mut self.journal, &o.journal);
        j.appended_bytes += k.appended_bytes;
        j.syncs += k.syncs;
        j.segments_created += k.segments_created;
        j.segments_removed += k.segments_removed;
        let g = &mut self.gauges;
        let h = &o.gauges;
        g.proposer_ballot = g.proposer_ballot.max(h.proposer_ballot);
        g.acceptor_ballot = g.acceptor_ballot.max(h.acceptor_ballot);
        g.leader = g.leader.max(h.leader);
        g.is_leader = g.is_leader.max(h.is_leader);
        g.proposer_decided = g.proposer_decided.max(h.proposer_decided);
        g.learner_decided = g.learner_decided.max(h.learner_decided);
        g.delivered = g.delivered.max(h.delivered);
        g.trimmed_out = g.trimmed_out.max(h.trimmed_out);
        g.learner_durable = g.learner_durable.max(h.learner_durable);
        g.journal_oldest = g.journal_oldest.max(h.journal_oldest);
        g.trim = g.trim.max(h.trim);
        g.in_flight = g.in_flight.max(h.in_flight);
    }
}

/// How often a thread publishes its counts and flushes its histograms.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// One thread's metrics: counts in plain integers and thread-local histograms, published to
/// its shard by `publish` when `due` (every `PUBLISH_EVERY`).
pub struct Recorder {
    pub(super) shard: Arc<Mutex<Counters>>,
    pub counters: Counters,
    pub(super) client_latency: Option<LocalHistogram>,
    pub(super) phase2: Option<LocalHistogram>,
    pub(super) batch: Option<LocalHistogram>,
    pub(super) commit: Option<LocalHistogram>,
    pub(super) fsync: Option<LocalHistogram>,
    pub(super) last_publish: Instant,
}

fn observe(h: &Option<LocalHistogram>, v: f64) {
    if let Some(h) = h {
        h.observe(v);
    }
}

impl Recorder {
    pub fn message_in(&mut self, kind: MessageKind) {
        self.counters.messages_in[kind.index()] += 1;
    }

    pub fn message_out(&mut self, kind: MessageKind) {
        self.counters.messages_out[kind.index()] += 1;
    }

    pub fn client_latency(&mut self, d: Duration) {
        observe(&self.client_latency, d.as_secs_f64());
    }

    pub fn phase2(&mut self, d: Duration) {
        observe(&self.phase2, d.as_secs_f64());
    }

    pub fn commit(&mut self, r: &CommitReport) {
        if r.changes > 0 {
            self.counters.commits += 1;
            self.counters.committed_changes += r.changes as u64;
            observe(&self.batch, r.changes as f64);
            observe(&self.commit, r.duration.as_secs_f64());
        }
        if let Some(f) = r.fsync {
            observe(&self.fsync, f.as_secs_f64());
        }
    }

    /// Whether it is time to publish (the caller then fills what it keeps elsewhere).
    pub fn due(&self) -> bool {
        self.last_publish.elapsed() >= PUBLISH_EVERY
    }

    /// Publishes the counts and flushes the histograms.
    pub fn publish(&mut self) {
        self.last_publish = Instant::now();
        *self.shard.lock().unwrap_or_else(|e| e.into_inner()) = self.counters.clone();
        for h in [
            &self.client_latency,
            &self.phase2,
            &self.batch,
            &self.commit,
            &self.fsync,
        ]
        .into_iter()
        .flatten()
        {
            h.flush();
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.publish();
    }
}
