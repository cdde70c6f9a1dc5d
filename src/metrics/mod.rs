//! Prometheus metrics of one node (`metrics_address` in its YAML; http.rs serves them).
//!
//! The hot path stays as it was: every loop or pipeline stage counts in plain integers it
//! owns (`Recorder::counters`) and observes into thread-local histograms. A few times a
//! second it publishes a copy of its counts to its shard and flushes its histograms. A
//! scrape sums the shards into the Prometheus families and encodes them. Names follow
//! Prometheus conventions: `ethpaxos_` prefix, `_total` counters, base units (`_seconds`),
//! a `node` label on every series and a `role` label on those of one role.

#![forbid(unsafe_code)]

pub mod http;

use crate::config::{NodeConfig, Role};
use crate::protocol::MessageKind;
use crate::storage::CommitReport;
use crate::transport::TransportStats;
use prometheus::core::Collector;
use prometheus::local::LocalHistogram;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metric {name}: {source}")]
    Register {
        name: String,
        source: prometheus::Error,
    },
    #[error("metrics_address {addr}: cannot listen: {why}")]
    Listen { addr: String, why: String },
}

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
    pub messages_in: [u64; 12],
    pub messages_out: [u64; 12],
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
    pub gauges: Gauges,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.transport.add(&o.transport);
        for k in 0..12 {
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
        g.trim = g.trim.max(h.trim);
        g.in_flight = g.in_flight.max(h.in_flight);
    }
}

/// Seconds buckets from 10 us to about 10 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.000_01, 2.0, 21).expect("valid buckets")
}

/// Each only on nodes that play its role.
struct Histograms {
    client_latency: Option<Histogram>,
    phase2: Option<Histogram>,
    batch: Option<Histogram>,
    commit: Option<Histogram>,
    fsync: Option<Histogram>,
}

struct Families {
    frames_received: IntCounter,
    frames_sent: IntCounter,
    send_errors: IntCounter,
    link_down: IntCounter,
    dropped: IntCounterVec,
    messages_in: IntCounterVec,
    messages_out: IntCounterVec,
    submitted: Option<IntCounter>,
    acknowledged: Option<IntCounter>,
    decided_values: Option<IntCounter>,
    delivered: Option<IntCounter>,
    shed: Option<IntCounter>,
    instances_opened: Option<IntCounter>,
    instances_decided: Option<IntCounter>,
    retransmissions: Option<IntCounter>,
    leader_changes: Option<IntCounter>,
    commits: Option<IntCounter>,
    committed_changes: Option<IntCounter>,
    ballot: IntGaugeVec,
    decided_instance: IntGaugeVec,
    leader: Option<IntGauge>,
    is_leader: Option<IntGauge>,
    delivered_instance: Option<IntGauge>,
    trimmed_out: Option<IntGauge>,
    trim: Option<IntGauge>,
    in_flight: Option<IntGauge>,
    storage_bytes: Option<IntGauge>,
    ring: IntGaugeVec,
}

type RingProbe = Box<dyn Fn() -> usize + Send + Sync>;

/// A node's metrics: the registry, every thread's shard, and what a scrape reads live.
pub struct Metrics {
    registry: Registry,
    families: Families,
    histograms: Histograms,
    shards: Mutex<Vec<Arc<Mutex<Counters>>>>,
    /// Scrapes are serialised: each sets the families from the shards, then encodes them.
    scrape: Mutex<()>,
    storage_dir: Option<PathBuf>,
    rings: Mutex<Vec<(&'static str, RingProbe)>>,
}

/// Registers metrics into one registry, naming the one that fails.
struct Builder<'a> {
    registry: &'a Registry,
}

/// The error for metric `name`, when it cannot be made or registered.
fn register_error(name: &str) -> impl FnOnce(prometheus::Error) -> MetricsError + '_ {
    move |source| MetricsError::Register {
        name: name.into(),
        source,
    }
}

impl Builder<'_> {
    /// Registers the metric `made` (or says why it could not be made).
    fn add<C: Collector + Clone + 'static>(
        &self,
        name: &str,
        made: prometheus::Result<C>,
    ) -> Result<C, MetricsError> {
        let c = made.map_err(register_error(name))?;
        self.registry
            .register(Box::new(c.clone()))
            .map_err(register_error(name))?;
        Ok(c)
    }

    fn counter(
        &self,
        name: &str,
        help: &str,
        role: Option<&str>,
    ) -> Result<IntCounter, MetricsError> {
        let mut opts = Opts::new(name, help);
        if let Some(r) = role {
            opts = opts.const_label("role", r);
        }
        self.add(name, IntCounter::with_opts(opts))
    }

    fn gauge(&self, name: &str, help: &str, role: &str) -> Result<IntGauge, MetricsError> {
        self.add(
            name,
            IntGauge::with_opts(Opts::new(name, help).const_label("role", role)),
        )
    }

    fn counter_vec(
        &self,
        name: &str,
        help: &str,
        label: &str,
    ) -> Result<IntCounterVec, MetricsError> {
        self.add(name, IntCounterVec::new(Opts::new(name, help), &[label]))
    }

    fn gauge_vec(&self, name: &str, help: &str, label: &str) -> Result<IntGaugeVec, MetricsError> {
        self.add(name, IntGaugeVec::new(Opts::new(name, help), &[label]))
    }

    fn histogram(
        &self,
        name: &str,
        help: &str,
        role: &str,
        buckets: Vec<f64>,
    ) -> Result<Histogram, MetricsError> {
        self.add(
            name,
            Histogram::with_opts(
                HistogramOpts::new(name, help)
                    .const_label("role", role)
                    .buckets(buckets),
            ),
        )
    }
}

/// The reasons a frame is dropped, as `reason` label values, with the counter of each.
const DROP_REASONS: [&str; 9] = [
    "bad_frame",
    "foreign_cluster",
    "non_member",
    "failed_mac",
    "not_for_us",
    "ring_full",
    "oversized",
    "own_mac",
    "unencodable",
];

fn drops(t: &TransportStats) -> [u64; 9] {
    [
        t.dropped_bad_frame,
        t.dropped_foreign_cluster,
        t.dropped_non_member,
        t.dropped_unauthenticated,
        t.dropped_not_for_us,
        t.shed_ring_full,
        t.dropped_oversized,
        t.dropped_own_mac,
        t.dropped_unencodable,
    ]
}

impl Metrics {
    /// The metrics of the node `cfg` describes: the families of the roles it plays.
    pub fn new(cfg: &NodeConfig) -> Result<Arc<Metrics>, MetricsError> {
        let me = cfg.me();
        let labels = HashMap::from([("node".to_string(), cfg.node_id.to_string())]);
        let registry = Registry::new_custom(Some("ethpaxos".into()), Some(labels))
            .map_err(register_error("registry"))?;
        let b = Builder {
            registry: &registry,
        };
        let (client, learner, proposer, acceptor) = (
            me.plays(Role::Client),
            me.plays(Role::Learner),
            me.plays(Role::Proposer),
            me.plays(Role::Acceptor),
        );
        let when = |yes: bool, name: &str, help: &str, role: &str| {
            yes.then(|| b.counter(name, help, Some(role))).transpose()
        };
        let gauge_when = |yes: bool, name: &str, help: &str, role: &str| {
            yes.then(|| b.gauge(name, help, role)).transpose()
        };
        let roles: Vec<&str> = me
            .roles
            .iter()
            .map(|r| match r {
                Role::Proposer => "proposer",
                Role::Acceptor => "acceptor",
                Role::Learner => "learner",
                Role::Client => "client",
                Role::Replica => "replica",
            })
            .collect();
        let info = b.add(
            "node_info",
            IntGauge::with_opts(
                Opts::new("node_info", "This node: its roles and transport (value 1).")
                    .const_label("roles", roles.join(","))
                    .const_label("transport", format!("{:?}", cfg.transport).to_lowercase()),
            ),
        )?;
        info.set(1);
        let families = Families {
            frames_received: b.counter(
                "frames_received_total",
                "Frames of our EtherType (or datagrams) received, before any check.",
                None,
            )?,
            frames_sent: b.counter("frames_sent_total", "Frames sent.", None)?,
            send_errors: b.counter(
                "frame_send_errors_total",
                "Frames that could not be sent (no route, port full, unknown member).",
                None,
            )?,
            link_down: b.counter(
                "link_down_total",
                "Times the raw socket reported its link down.",
                None,
            )?,
            dropped: b.counter_vec(
                "frames_dropped_total",
                "Received frames dropped, by reason: bad_frame (does not decode), \
                 foreign_cluster, non_member, failed_mac (no valid authentication tag), \
                 not_for_us (another destination MAC), ring_full (staged pipeline shed it), \
                 oversized (longer than max_frame), own_mac (this node's own source MAC), \
                 unencodable (an outgoing message that could not be encoded).",
                "reason",
            )?,
            messages_in: b.counter_vec(
                "messages_received_total",
                "Messages received from other nodes, by type.",
                "type",
            )?,
            messages_out: b.counter_vec(
                "messages_sent_total",
                "Messages sent to other nodes, by type.",
                "type",
            )?,
            submitted: when(
                client,
                "values_submitted_total",
                "Values this node's clients submitted.",
                "client",
            )?,
            acknowledged: when(
                client,
                "values_acknowledged_total",
                "Values of this node's clients delivered back to them.",
                "client",
            )?,
            decided_values: when(
                learner,
                "values_decided_total",
                "Client values in the instances this learner learnt decided.",
                "learner",
            )?,
            delivered: when(
                learner,
                "values_delivered_total",
                "Values this learner delivered, each once, in order.",
                "learner",
            )?,
            shed: when(
                proposer,
                "values_shed_total",
                "Client values the leader dropped because its queue was full.",
                "proposer",
            )?,
            instances_opened: when(
                proposer,
                "instances_opened_total",
                "Instances this proposer started phase 2 in.",
                "proposer",
            )?,
            instances_decided: when(
                proposer,
                "instances_decided_total",
                "Instances that reached a quorum for this proposer.",
                "proposer",
            )?,
            retransmissions: when(
                proposer,
                "retransmissions_total",
                "Accept and Prepare messages this proposer sent again after a timeout.",
                "proposer",
            )?,
            leader_changes: when(
                proposer,
                "leader_changes_total",
                "Times the leader this proposer knows of changed.",
                "proposer",
            )?,
            commits: when(
                acceptor,
                "group_commits_total",
                "Group commits (batches of votes written together).",
                "acceptor",
            )?,
            committed_changes: when(
                acceptor,
                "committed_changes_total",
                "Acceptor state changes written in group commits.",
                "acceptor",
            )?,
            ballot: b.gauge_vec(
                "ballot_round",
                "Round of the highest ballot seen (proposer) or promised (acceptor).",
                "role",
            )?,
            decided_instance: b.gauge_vec(
                "decided_instance",
                "Every instance below this one is decided, as this proposer or learner knows.",
                "role",
            )?,
            leader: gauge_when(
                proposer,
                "leader_node",
                "Node id of the leader this proposer knows of (0: none).",
                "proposer",
            )?,
            is_leader: gauge_when(
                proposer,
                "is_leader",
                "1 while this proposer leads.",
                "proposer",
            )?,
            delivered_instance: gauge_when(
                learner,
                "delivered_instance",
                "Every instance below this one is delivered here.",
                "learner",
            )?,
            trimmed_out: gauge_when(
                learner,
                "learner_trimmed_out",
                "1 when this learner needs instances the acceptors trimmed (it was away longer \
                 than learner_timeout_ms). It cannot catch up by itself; restore its \
                 application state from a snapshot.",
                "learner",
            )?,
            trim: gauge_when(
                acceptor,
                "trim_instance",
                "The acceptor's trim point: it forgot every instance below.",
                "acceptor",
            )?,
            in_flight: gauge_when(
                proposer,
                "instances_in_flight",
                "Instances proposed and not yet decided.",
                "proposer",
            )?,
            storage_bytes: gauge_when(
                acceptor && cfg.storage.acceptor_dir(cfg.node_id).is_some(),
                "storage_bytes",
                "Bytes of this acceptor's RocksDB directory (storage.path/acceptor-<id>).",
                "acceptor",
            )?,
            ring: b.gauge_vec(
                "ring_occupancy",
                "Items waiting in a staged pipeline's ring, by ring.",
                "ring",
            )?,
        };
        for r in DROP_REASONS {
            families.dropped.with_label_values(&[r]);
        }
        for k in MessageKind::ALL {
            families.messages_in.with_label_values(&[k.name()]);
            families.messages_out.with_label_values(&[k.name()]);
        }
        let histogram = |yes: bool, name: &str, help: &str, role: &str, buckets: Vec<f64>| {
            yes.then(|| b.histogram(name, help, role, buckets))
                .transpose()
        };
        let histograms = Histograms {
            client_latency: histogram(
                client,
                "client_latency_seconds",
                "Client-observed latency: from submission to delivery at this node.",
                "client",
                latency_buckets(),
            )?,
            phase2: histogram(
                proposer,
                "phase2_latency_seconds",
                "From an instance's first Accept to its quorum of votes, at the leader.",
                "proposer",
                latency_buckets(),
            )?,
            batch: histogram(
                acceptor,
                "group_commit_changes",
                "Acceptor state changes per group commit.",
                "acceptor",
                exponential_buckets(1.0, 2.0, 14).expect("valid buckets"),
            )?,
            commit: histogram(
                acceptor,
                "group_commit_duration_seconds",
                "How long writing one group commit took (synced under policy sync).",
                "acceptor",
                latency_buckets(),
            )?,
            fsync: histogram(
                acceptor && cfg.storage.fsync_policy != crate::storage::FsyncPolicy::None,
                "fsync_duration_seconds",
                "How long a sync took: the synced write (policy sync) or the log's periodic \
                 sync (policy async).",
                "acceptor",
                latency_buckets(),
            )?,
        };
        Ok(Arc::new(Metrics {
            registry,
            families,
            histograms,
            shards: Mutex::new(Vec::new()),
            scrape: Mutex::new(()),
            storage_dir: acceptor
                .then(|| cfg.storage.acceptor_dir(cfg.node_id))
                .flatten(),
            rings: Mutex::new(Vec::new()),
        }))
    }

    /// A new thread's handle: its own shard and local histograms.
    pub fn recorder(self: &Arc<Self>) -> Recorder {
        let shard = Arc::new(Mutex::new(Counters::default()));
        self.shards
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(shard.clone());
        let h = &self.histograms;
        let local = |h: &Option<Histogram>| h.as_ref().map(Histogram::local);
        Recorder {
            shard,
            counters: Counters::default(),
            client_latency: local(&h.client_latency),
            phase2: local(&h.phase2),
            batch: local(&h.batch),
            commit: local(&h.commit),
            fsync: local(&h.fsync),
            last_publish: Instant::now(),
        }
    }

    /// Reports a ring's occupancy at every scrape.
    pub fn watch_ring(&self, name: &'static str, len: impl Fn() -> usize + Send + Sync + 'static) {
        self.rings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name, Box::new(len)));
    }

    /// Sums every shard into the families and encodes everything in the text format.
    pub fn render(&self) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let mut sum = Counters::default();
        for shard in self.shards.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            sum.add(&shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
        self.set(&sum);
        let mut out = Vec::new();
        // Encoding our own families into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn set(&self, c: &Counters) {
        let f = &self.families;
        let set = |counter: &IntCounter, v: u64| {
            counter.reset();
            counter.inc_by(v);
        };
        let set_opt = |counter: &Option<IntCounter>, v: u64| {
            if let Some(counter) = counter {
                set(counter, v);
            }
        };
        set(&f.frames_received, c.transport.received);
        set(&f.frames_sent, c.transport.sent);
        set(&f.send_errors, c.transport.send_errors);
        set(&f.link_down, c.transport.link_down);
        for (reason, v) in DROP_REASONS.iter().zip(drops(&c.transport)) {
            set(&f.dropped.with_label_values(&[reason]), v);
        }
        for k in MessageKind::ALL {
            set(
                &f.messages_in.with_label_values(&[k.name()]),
                c.messages_in[k.index()],
            );
            set(
                &f.messages_out.with_label_values(&[k.name()]),
                c.messages_out[k.index()],
            );
        }
        set_opt(&f.submitted, c.submitted);
        set_opt(&f.acknowledged, c.acknowledged);
        set_opt(&f.decided_values, c.decided_values);
        set_opt(&f.delivered, c.delivered);
        set_opt(&f.shed, c.shed);
        set_opt(&f.instances_opened, c.instances_opened);
        set_opt(&f.instances_decided, c.instances_decided);
        set_opt(&f.retransmissions, c.retransmissions);
        set_opt(&f.leader_changes, c.leader_changes);
        set_opt(&f.commits, c.commits);
        set_opt(&f.committed_changes, c.committed_changes);
        let g = &c.gauges;
        let gauge = |family: &Option<IntGauge>, v: Option<u64>| {
            if let (Some(family), Some(v)) = (family, v) {
                family.set(v as i64);
            }
        };
        if let Some(v) = g.proposer_ballot {
            f.ballot.with_label_values(&["proposer"]).set(v as i64);
        }
        if let Some(v) = g.acceptor_ballot {
            f.ballot.with_label_values(&["acceptor"]).set(v as i64);
        }
        if let Some(v) = g.proposer_decided {
            f.decided_instance
                .with_label_values(&["proposer"])
                .set(v as i64);
        }
        if let Some(v) = g.learner_decided {
            f.decided_instance
                .with_label_values(&["learner"])
                .set(v as i64);
        }
        gauge(&f.leader, g.leader);
        gauge(&f.is_leader, g.is_leader.map(u64::from));
        gauge(&f.delivered_instance, g.delivered);
        gauge(&f.trimmed_out, g.trimmed_out);
        gauge(&f.trim, g.trim);
        gauge(&f.in_flight, g.in_flight);
        if let (Some(family), Some(dir)) = (&f.storage_bytes, &self.storage_dir) {
            family.set(crate::storage::dir_bytes(dir) as i64);
        }
        for (name, len) in self.rings.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            f.ring.with_label_values(&[name]).set(len() as i64);
        }
    }
}

/// How often a thread publishes its counts and flushes its histograms.
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// One thread's metrics: counts in plain integers and thread-local histograms, published to
/// its shard by `publish` when `due` (every `PUBLISH_EVERY`).
pub struct Recorder {
    shard: Arc<Mutex<Counters>>,
    pub counters: Counters,
    client_latency: Option<LocalHistogram>,
    phase2: Option<LocalHistogram>,
    batch: Option<LocalHistogram>,
    commit: Option<LocalHistogram>,
    fsync: Option<LocalHistogram>,
    last_publish: Instant,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(roles: &str) -> NodeConfig {
        serde_yaml_ng::from_str(&format!(
            "node_id: 11\nmembers:\n  - {{id: 11, roles: {roles}, udp: \"127.0.0.1:7000\"}}\n"
        ))
        .unwrap()
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn shards_are_summed_at_scrape_and_unpublished_counts_wait() {
        let m = Metrics::new(&config("[replica]")).unwrap();
        let (mut a, mut b) = (m.recorder(), m.recorder());
        a.counters.transport.received = 5;
        a.counters.transport.dropped_unauthenticated = 2;
        b.counters.transport.received = 7;
        b.message_in(MessageKind::Accept);
        b.message_in(MessageKind::Accept);
        b.counters.gauges.trim = Some(40);
        a.publish();
        b.publish();
        a.counters.transport.received = 1000;
        let text = m.render();
        assert_eq!(
            line(&text, "ethpaxos_frames_received_total{"),
            Some("ethpaxos_frames_received_total{node=\"11\"} 12")
        );
        assert!(text.contains("ethpaxos_frames_dropped_total{reason=\"failed_mac\",node=\"11\"} 2"));
        assert!(text.contains("ethpaxos_messages_received_total{type=\"accept\",node=\"11\"} 2"));
        assert!(text.contains("ethpaxos_trim_instance{role=\"acceptor\",node=\"11\"} 40"));
        // A counter set from the shards again does not add up across scrapes.
        assert_eq!(
            line(&m.render(), "ethpaxos_frames_received_total{"),
            Some("ethpaxos_frames_received_total{node=\"11\"} 12")
        );
        a.publish();
        assert_eq!(
            line(&m.render(), "ethpaxos_frames_received_total{"),
            Some("ethpaxos_frames_received_total{node=\"11\"} 1007")
        );
    }

    #[test]
    fn a_node_has_the_families_of_its_roles_only() {
        let learner = Metrics::new(&config("[learner, client]")).unwrap();
        let mut r = learner.recorder();
        r.client_latency(Duration::from_micros(300));
        r.publish();
        let text = learner.render();
        assert!(text.contains("ethpaxos_values_delivered_total{role=\"learner\",node=\"11\"} 0"));
        assert!(
            text.contains("ethpaxos_client_latency_seconds_count{role=\"client\",node=\"11\"} 1")
        );
        assert!(!text.contains("ethpaxos_group_commits_total"), "{text}");
        assert!(!text.contains("ethpaxos_phase2_latency_seconds"), "{text}");
        let info = line(&text, "ethpaxos_node_info{").unwrap();
        assert!(
            info.contains("roles=\"learner,client\"") && info.ends_with("} 1"),
            "{info}"
        );
    }
}
