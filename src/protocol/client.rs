//! A client session: numbers its values, sends them to the proposer it believes leads, and
//! resends what is not acknowledged in time. Retries reuse the sequence number, so learners
//! deliver each value once however often it was sent.

use super::actions::Actions;
use super::config::ProtocolConfig;
use super::learner::ClientDedup;
use super::limits as sizes;
use super::message::Message;
use super::types::{ClientId, ClientValue, NodeId};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("value of {len} bytes is over the {max}-byte limit that fits one frame (max_frame)")]
    ValueTooLarge { len: usize, max: usize },
}

struct Outstanding {
    payload: Bytes,
    submitted_at: Duration,
    sent_at: Duration,
}

pub struct Client {
    id: ClientId,
    proposers: Vec<NodeId>,
    leader: Option<NodeId>,
    next_seq: u64,
    outstanding: BTreeMap<u64, Outstanding>,
    unsent: Vec<ClientValue>,
    max_value: usize,
    request_budget: usize,
    timeout: Duration,
    /// No outstanding value can time out before this, so `tick` need not look (a client
    /// with thousands outstanding is ticked every millisecond).
    next_due: Duration,
}

impl Client {
    pub fn new(id: ClientId, cfg: &ProtocolConfig, proposers: Vec<NodeId>) -> Self {
        Client {
            id,
            leader: proposers.first().copied(),
            proposers,
            next_seq: 0,
            outstanding: BTreeMap::new(),
            unsent: Vec::new(),
            max_value: cfg.max_value_bytes(),
            request_budget: cfg.max_payload() - sizes::CLIENT_REQUEST_FIXED,
            timeout: ProtocolConfig::ms(cfg.client_timeout_ms),
            next_due: Duration::MAX,
        }
    }

    pub fn id(&self) -> ClientId {
        self.id
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.len()
    }

    /// Queues a value; `flush` sends it. Refuses a value that could not fit a frame.
    pub fn submit(&mut self, now: Duration, payload: Bytes) -> Result<u64, SubmitError> {
        if payload.len() > self.max_value {
            return Err(SubmitError::ValueTooLarge {
                len: payload.len(),
                max: self.max_value,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unsent.push(ClientValue {
            client: self.id,
            seq,
            payload: payload.clone(),
        });
        self.outstanding.insert(
            seq,
            Outstanding {
                payload,
                submitted_at: now,
                sent_at: now,
            },
        );
        self.next_due = self.next_due.min(now + self.timeout);
        Ok(seq)
    }

    /// Sends queued values, as few frames as fit.
    pub fn flush(&mut self, out: &mut Actions) {
        if self.unsent.is_empty() {
            return;
        }
        // Every value each flush, for hundreds of sessions a turn: no copies it can avoid.
        let values = std::mem::take(&mut self.unsent);
        let leader = self.leader.map(|l| [l]);
        let targets: &[NodeId] = match &leader {
            Some(l) => l,
            None => &self.proposers,
        };
        let mut frame = Vec::with_capacity(values.len());
        let mut used = 0;
        for v in values {
            let size = sizes::value(&v);
            if !frame.is_empty() && used + size > self.request_budget {
                out.send_each(
                    targets,
                    Message::ClientRequest {
                        values: std::mem::take(&mut frame),
                    },
                );
                used = 0;
            }
            used += size;
            frame.push(v);
        }
        out.send_each(targets, Message::ClientRequest { values: frame });
    }

    /// A learner delivered `seq`: returns the latency from submission, or None for a value
    /// already acknowledged.
    pub fn on_delivered(&mut self, now: Duration, seq: u64) -> Option<Duration> {
        self.outstanding
            .remove(&seq)
            .map(|o| now.saturating_sub(o.submitted_at))
    }

    /// The learner installed a snapshot whose exactly-once table says which of this
    /// client's values were delivered: those outstanding are acknowledged (their latency
    /// returned), never to be delivered here.
    pub fn on_installed(&mut self, now: Duration, dedup: &ClientDedup) -> Vec<(u64, Duration)> {
        let done: Vec<u64> = self
            .outstanding
            .keys()
            .copied()
            .filter(|s| dedup.holds(*s))
            .collect();
        done.into_iter()
            .filter_map(|s| Some((s, self.on_delivered(now, s)?)))
            .collect()
    }

    pub fn handle(&mut self, msg: &Message) {
        if let Message::Redirect { client, leader } = msg {
            if *client == self.id {
                self.leader = *leader;
            }
        }
    }

    /// Resends values unacknowledged for the timeout; after a silent leader, to every proposer.
    pub fn tick(&mut self, now: Duration, out: &mut Actions) {
        if now < self.next_due {
            self.flush(out);
            return;
        }
        let mut late = false;
        let mut next_due = Duration::MAX;
        for (seq, o) in self.outstanding.iter_mut() {
            if now.saturating_sub(o.sent_at) >= self.timeout {
                o.sent_at = now;
                late = true;
                self.unsent.push(ClientValue {
                    client: self.id,
                    seq: *seq,
                    payload: o.payload.clone(),
                });
            }
            next_due = next_due.min(o.sent_at + self.timeout);
        }
        self.next_due = next_due;
        if late {
            self.leader = None;
        }
        self.flush(out);
    }
}
