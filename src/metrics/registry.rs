//! The Prometheus side of the metrics: the registry and its families, the shards every
//! `Recorder` publishes to, and the scrape that sums them and encodes the text format.

use super::recorder::{Counters, Recorder};
use super::MetricsError;
use crate::config::{NodeConfig, Role};
use crate::protocol::MessageKind;
use crate::transport::TransportStats;
use prometheus::core::Collector;
use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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
    rebinds: IntCounter,
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
    refused_oversized: Option<IntCounter>,
    refused_top_round: Option<IntCounter>,
    deferred_prepares: Option<IntCounter>,
    ballot: IntGaugeVec,
    decided_instance: IntGaugeVec,
    leader: Option<IntGauge>,
    is_leader: Option<IntGauge>,
    delivered_instance: Option<IntGauge>,
    trimmed_out: Option<IntGauge>,
    learner_durable: Option<IntGauge>,
    journal_oldest: Option<IntGauge>,
    journal_syncs: Option<IntCounter>,
    journal_bytes: Option<IntCounter>,
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
            rebinds: b.counter(
                "interface_rebinds_total",
                "Times the node's interface went away and it rebound to the one holding its MAC.",
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
            refused_oversized: when(
                acceptor,
                "acceptor_refused_oversized_total",
                "2a's refused because their batch would not fit a 1b page or catch-up reply \
                 (only a forged or broken proposer sends one).",
                "acceptor",
            )?,
            refused_top_round: when(
                acceptor,
                "acceptor_refused_top_round_total",
                "Prepares and 2a's refused at the top round (u32::MAX): forged or runaway \
                 ballots.",
                "acceptor",
            )?,
            deferred_prepares: when(
                acceptor,
                "acceptor_deferred_prepares_total",
                "Prepares from another proposer put off while the promised leader was still \
                 heard from (the leader lease).",
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
                "1 when this learner needs instances the acceptors trimmed and no peer \
                 learner's journal still holds: it cannot catch up by itself.",
                "learner",
            )?,
            learner_durable: gauge_when(
                learner,
                "learner_durable_instance",
                "Every instance below this one is delivered and durable in the learner's \
                 journal: the progress it reports (acceptors trim by it) and where it resumes \
                 after a restart.",
                "learner",
            )?,
            journal_oldest: gauge_when(
                learner,
                "journal_oldest_instance",
                "The first instance the learner's journal still holds: stream readers can \
                 resume from here on.",
                "learner",
            )?,
            journal_syncs: when(
                learner,
                "journal_syncs_total",
                "Syncs of the learner's journal.",
                "learner",
            )?,
            journal_bytes: when(
                learner,
                "journal_appended_bytes_total",
                "Bytes appended to the learner's journal.",
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
        set(&f.rebinds, c.transport.rebinds);
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
        set_opt(&f.refused_oversized, c.refused_oversized);
        set_opt(&f.refused_top_round, c.refused_top_round);
        set_opt(&f.deferred_prepares, c.deferred_prepares);
        set_opt(&f.journal_syncs, c.journal.syncs);
        set_opt(&f.journal_bytes, c.journal.appended_bytes);
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
        gauge(&f.learner_durable, g.learner_durable);
        gauge(&f.journal_oldest, g.journal_oldest);
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
