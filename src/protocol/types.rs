//! The vocabulary shared by every role: ballots, instances, client values and batches.

use bytes::Bytes;
use std::fmt;
use std::sync::Arc;

/// A node's id in the cluster membership (the `sender id` of every frame).
pub type NodeId = u16;

/// A consensus instance (a slot in the replicated log). u64, so it never wraps in practice:
/// Kernel Paxos' u32 wraps in about an hour at 1M instances/s.
pub type InstanceId = u64;

/// Where a delivered value stands in the cluster's one order: its instance, and its index in
/// that instance's batch. Positions only grow along a learner's stream; every learner gives
/// a value the same one. Written `instance.index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub instance: InstanceId,
    pub index: u32,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.instance, self.index)
    }
}

impl std::str::FromStr for Position {
    type Err = String;
    fn from_str(s: &str) -> Result<Position, String> {
        let bad = || format!("{s:?} is not a position (INSTANCE.INDEX, e.g. 1200.3)");
        let (instance, index) = s.split_once('.').ok_or_else(bad)?;
        Ok(Position {
            instance: instance.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

/// A client session id. Together with a per-client sequence number it identifies a value,
/// which is what lets learners deliver each value exactly once despite client retries.
pub type ClientId = u64;

/// A ballot, ordered by round first and proposer id second, so two proposers never share one.
/// `Ballot::ZERO` means "nothing promised / accepted yet".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ballot {
    pub round: u32,
    pub proposer: NodeId,
}

impl Ballot {
    pub const ZERO: Ballot = Ballot {
        round: 0,
        proposer: 0,
    };

    pub fn new(round: u32, proposer: NodeId) -> Self {
        Ballot { round, proposer }
    }

    pub fn is_zero(&self) -> bool {
        *self == Ballot::ZERO
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.round, self.proposer)
    }
}

/// One value submitted by a client. `payload` is reference counted so a batch can be sent to
/// every acceptor and learner without copying it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientValue {
    pub client: ClientId,
    pub seq: u64,
    pub payload: Bytes,
}

/// The value of one instance: a batch of client values. An empty batch is a no-op, which a new
/// leader uses to fill holes. Cloning shares the values.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Batch(Arc<[ClientValue]>);

impl Batch {
    pub fn noop() -> Self {
        Batch(Arc::from(Vec::new()))
    }

    pub fn new(values: Vec<ClientValue>) -> Self {
        Batch(Arc::from(values))
    }

    pub fn is_noop(&self) -> bool {
        self.0.is_empty()
    }

    pub fn values(&self) -> &[ClientValue] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_noop() {
            return write!(f, "noop");
        }
        write!(f, "batch[")?;
        for (i, v) in self.0.iter().enumerate().take(4) {
            if i > 0 {
                write!(f, ",")?;
            }
            write!(f, "{}:{}", v.client, v.seq)?;
        }
        if self.0.len() > 4 {
            write!(f, ",..{} values", self.0.len())?;
        }
        write!(f, "]")
    }
}

/// An acceptor's vote for one instance, as reported in phase 1b and in catch-up replies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedEntry {
    pub instance: InstanceId,
    pub ballot: Ballot,
    pub value: Batch,
}
