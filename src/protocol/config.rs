//! Protocol tunables and cluster membership. Every role reads the same values; the YAML node
//! config (config/) embeds a `protocol:` section of this shape.

use super::limits::{self as sizes, MAX_MAX_FRAME, MIN_MAX_FRAME};
use super::types::NodeId;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProtocolConfig {
    /// Frames from another cluster id are dropped.
    pub cluster_id: u32,
    /// Largest frame in bytes, Ethernet header included (1500 by default; up to 9216 for jumbo).
    pub max_frame: usize,
    /// How many instances the leader keeps open (proposed, not yet decided) at once.
    pub window: usize,
    /// A batch (one instance's value) holds at most this many client values ...
    pub batch_max_values: usize,
    /// ... and at most this many bytes of encoded values (capped so a 2a fits one frame) ...
    pub batch_max_bytes: usize,
    /// ... and waits at most this long for more values while other instances are open.
    pub batch_max_delay_us: u64,
    /// Client values the leader queues before it sheds new ones (clients retry them).
    pub max_pending_values: usize,
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Silence after which the first standby takes over; standby k waits k extra backoffs.
    pub leader_timeout_ms: u64,
    /// Extra wait per standby rank, so standbys never duel.
    pub takeover_backoff_ms: u64,
    /// 1a/2a retransmission timeout.
    pub retransmit_timeout_ms: u64,
    /// A learner asks for missing instances when a gap lasts this long ...
    pub catchup_delay_ms: u64,
    /// ... and at most every this long ...
    pub catchup_interval_ms: u64,
    /// ... for at most this many instances per request.
    pub catchup_max_instances: u64,
    /// An acceptor answers one Prepare (a page of phase 1b) or one catch-up request with at
    /// most this many frames; the asker asks again for the rest. Bounds every burst, so a
    /// long history never floods a receive buffer or holds a loop turn.
    pub answer_max_frames: u64,
    /// A learner not heard from for this long stops holding trim back, and phase 1 no longer
    /// starts at its delivery point. Once trim passes it, it reports `Trimmed`.
    pub learner_timeout_ms: u64,
    /// A learner keeps votes and values for at most this many instances past the next one it
    /// delivers; beyond that it relies on catch-up (bounds its memory).
    pub learner_max_ahead: u64,
    /// Learners report their delivery point to proposers this often.
    pub progress_interval_ms: u64,
    /// The leader tells acceptors to trim this often (0 disables trimming) ...
    pub trim_interval_ms: u64,
    /// ... keeping this many instances below the newest snapshot a live learner holds.
    pub trim_keep: u64,
    /// A client resends an unacknowledged value after this long.
    pub client_timeout_ms: u64,
    /// Acceptors send their 2b votes to the leader only, and the leader tells learners which
    /// instances a quorum voted for (Decided), in one message per learner per turn: learners
    /// no longer hear a 2b from every acceptor. Every node of a cluster must agree.
    pub relay_decisions: bool,
    /// Raw Ethernet transports: a message for every other member that takes its type (a 2a
    /// to every acceptor and learner, a heartbeat) leaves as one frame to the cluster's group
    /// MAC, which the switch floods, instead of one frame per member. Nodes always take group
    /// frames; this only says whether this node sends them.
    pub group_frames: bool,
    /// How often a node's driver ticks its roles (timers: heartbeats, retransmits, batch
    /// delays). Finer than every timeout above.
    pub tick_us: u64,
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            cluster_id: 1,
            max_frame: super::limits::DEFAULT_MAX_FRAME,
            window: 1024,
            batch_max_values: 1024,
            batch_max_bytes: usize::MAX,
            batch_max_delay_us: 200,
            max_pending_values: 1 << 20,
            heartbeat_interval_ms: 20,
            leader_timeout_ms: 150,
            takeover_backoff_ms: 100,
            retransmit_timeout_ms: 50,
            catchup_delay_ms: 20,
            catchup_interval_ms: 20,
            catchup_max_instances: 4096,
            answer_max_frames: 32,
            learner_timeout_ms: 5_000,
            learner_max_ahead: 65_536,
            progress_interval_ms: 100,
            trim_interval_ms: 100,
            trim_keep: 10_000,
            client_timeout_ms: 500,
            tick_us: 1_000,
            relay_decisions: false,
            group_frames: true,
        }
    }
}

/// A configuration value that cannot work, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("protocol.{field}: {why}")]
    Invalid { field: &'static str, why: String },
    #[error("membership: {0}")]
    Membership(String),
}

fn invalid(field: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        why: why.into(),
    }
}

impl ProtocolConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(MIN_MAX_FRAME..=MAX_MAX_FRAME).contains(&self.max_frame) {
            return Err(invalid(
                "max_frame",
                format!(
                    "{} is outside {MIN_MAX_FRAME}..={MAX_MAX_FRAME} bytes",
                    self.max_frame
                ),
            ));
        }
        // Every numeric field has a range: 0 often means "never", and values near 2^64 make
        // sums wrap or memory grow without bound.
        const HOUR_MS: u64 = 3_600_000;
        for (field, v, min, max) in [
            ("window", self.window as u64, 1, 1 << 20),
            (
                "batch_max_values",
                self.batch_max_values as u64,
                1,
                u16::MAX as u64,
            ),
            ("batch_max_bytes", self.batch_max_bytes as u64, 1, u64::MAX),
            ("batch_max_delay_us", self.batch_max_delay_us, 0, 1_000_000),
            (
                "max_pending_values",
                self.max_pending_values as u64,
                1,
                1 << 24,
            ),
            (
                "heartbeat_interval_ms",
                self.heartbeat_interval_ms,
                1,
                HOUR_MS,
            ),
            ("leader_timeout_ms", self.leader_timeout_ms, 1, HOUR_MS),
            ("takeover_backoff_ms", self.takeover_backoff_ms, 0, HOUR_MS),
            (
                "retransmit_timeout_ms",
                self.retransmit_timeout_ms,
                1,
                HOUR_MS,
            ),
            ("catchup_delay_ms", self.catchup_delay_ms, 0, HOUR_MS),
            ("catchup_interval_ms", self.catchup_interval_ms, 1, HOUR_MS),
            (
                "catchup_max_instances",
                self.catchup_max_instances,
                1,
                1 << 20,
            ),
            ("answer_max_frames", self.answer_max_frames, 1, 4096),
            (
                "learner_timeout_ms",
                self.learner_timeout_ms,
                1,
                24 * HOUR_MS,
            ),
            ("learner_max_ahead", self.learner_max_ahead, 1, 1 << 24),
            (
                "progress_interval_ms",
                self.progress_interval_ms,
                1,
                HOUR_MS,
            ),
            ("trim_interval_ms", self.trim_interval_ms, 0, HOUR_MS),
            ("trim_keep", self.trim_keep, 0, 1 << 32),
            ("client_timeout_ms", self.client_timeout_ms, 1, HOUR_MS),
            ("tick_us", self.tick_us, 10, 100_000),
        ] {
            if v < min || v > max {
                return Err(invalid(field, format!("{v} is outside {min}..={max}")));
            }
        }
        if self.progress_interval_ms >= self.learner_timeout_ms {
            return Err(invalid(
                "learner_timeout_ms",
                format!(
                    "{} must exceed progress_interval_ms ({}), or live learners count as dead",
                    self.learner_timeout_ms, self.progress_interval_ms
                ),
            ));
        }
        if self.leader_timeout_ms <= 2 * self.heartbeat_interval_ms {
            return Err(invalid(
                "leader_timeout_ms",
                format!(
                    "{} must exceed twice heartbeat_interval_ms ({}), or a healthy leader is deposed",
                    self.leader_timeout_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        Ok(())
    }

    /// The largest client payload accepted at submission; larger ones are refused, never cut.
    pub fn max_value_bytes(&self) -> usize {
        sizes::max_value_payload(self.max_frame)
    }

    /// Payload bytes per frame.
    pub fn max_payload(&self) -> usize {
        sizes::max_payload(self.max_frame)
    }

    /// Encoded batch bytes allowed per instance: the configured limit, capped so the batch fits
    /// alone in every message that carries it (2a, a 1b chunk, a catch-up reply).
    pub fn effective_batch_bytes(&self) -> usize {
        self.batch_max_bytes.min(sizes::max_batch(self.max_frame))
    }

    /// How long an acceptor keeps following the proposer it promised, after last hearing
    /// from it, before it lets another proposer prepare: a heartbeat period less than a
    /// standby's timeout, so a healthy leader is never deposed by a standby that merely
    /// missed heartbeats, and a dead one is replaced as soon as its first standby asks.
    pub fn tick(&self) -> Duration {
        Duration::from_micros(self.tick_us)
    }

    pub fn leader_lease(&self) -> Duration {
        Self::ms(
            self.leader_timeout_ms
                .saturating_sub(self.heartbeat_interval_ms),
        )
    }

    /// The largest encoded batch an acceptor accepts in a 2a: one that fits alone in every
    /// message that must carry it again (a 1b page, a catch-up reply).
    pub fn max_batch_bytes(&self) -> usize {
        sizes::max_batch(self.max_frame)
    }

    pub fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// Who plays which role. Node ids are unique across roles only where one node plays several.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub proposers: Vec<NodeId>,
    pub acceptors: Vec<NodeId>,
    pub learners: Vec<NodeId>,
}

impl Membership {
    pub fn quorum(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    pub fn acceptor_index(&self, id: NodeId) -> Option<usize> {
        self.acceptors.iter().position(|a| *a == id)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.acceptors.len() < 3 {
            return Err(ConfigError::Membership(format!(
                "{} acceptors given; at least 3 are needed to survive one failure",
                self.acceptors.len()
            )));
        }
        if self.acceptors.len() > 64 {
            return Err(ConfigError::Membership(
                "at most 64 acceptors are supported".into(),
            ));
        }
        if self.proposers.is_empty() {
            return Err(ConfigError::Membership("no proposer given".into()));
        }
        if self.learners.is_empty() {
            return Err(ConfigError::Membership("no learner given".into()));
        }
        for (role, ids) in [
            ("proposers", &self.proposers),
            ("acceptors", &self.acceptors),
            ("learners", &self.learners),
        ] {
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(ConfigError::Membership(format!(
                    "node id {} is listed twice among {role}",
                    w[0]
                )));
            }
        }
        Ok(())
    }
}
