//! Every message the roles exchange. The wire module gives each one a frame layout
//! (docs/wire-format.md); the in-memory transport and the simulator pass them as they are.

use bytes::Bytes;

use super::types::{
    AcceptedEntry, Ballot, Batch, ClientId, ClientValue, InstanceId, NodeId, Position,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Phase 1a: promise me `ballot` for every instance from `from` on.
    Prepare { ballot: Ballot, from: InstanceId },
    /// Phase 1b, one chunk of one page of it: the acceptor's votes for instances in
    /// `[chunk_start, chunk_end)`. A Prepare is answered with one page, `[from, end)`, of at
    /// most `answer_max_frames` chunks; the proposer asks for the next page from `end` until
    /// it holds everything below `log_end`, the end of the acceptor's log. No answer is ever a
    /// whole history at once.
    Promise {
        ballot: Ballot,
        from: InstanceId,
        end: InstanceId,
        log_end: InstanceId,
        chunk_start: InstanceId,
        chunk_end: InstanceId,
        trim: InstanceId,
        entries: Vec<AcceptedEntry>,
    },
    /// Phase 2a: accept `value` for `instance` at `ballot`. Sent to acceptors and learners, so
    /// learners hold the value before the votes arrive and votes need not carry it.
    Accept {
        ballot: Ballot,
        instance: InstanceId,
        value: Batch,
    },
    /// Phase 2b: the acceptor voted for these instances at `ballot`.
    Accepted {
        ballot: Ballot,
        instances: Vec<InstanceId>,
    },
    /// From the leader to learners (with `relay_decisions`): a quorum of acceptors voted for
    /// these instances at `ballot`, the leader's own. A learner holding the leader's 2a at
    /// that ballot decides its value, as if it had the votes themselves.
    Decided {
        ballot: Ballot,
        instances: Vec<InstanceId>,
    },
    /// The acceptor refuses `rejected` because it promised the higher `promised`.
    Reject { promised: Ballot, rejected: Ballot },
    /// From the leader (or a proposer whose phase 1 a quorum is answering) to proposers,
    /// acceptors and learners: I lead at `ballot`; every instance below
    /// `decided_below` is decided and the next I will open is `next_instance`.
    Heartbeat {
        ballot: Ballot,
        decided_below: InstanceId,
        next_instance: InstanceId,
    },
    /// Values from a client to the proposer it believes leads.
    ClientRequest { values: Vec<ClientValue> },
    /// A proposer that does not lead tells a client who does (`leader` is None if unknown).
    Redirect {
        client: ClientId,
        leader: Option<NodeId>,
    },
    /// A learner asks acceptors for their votes on `[from, to)`.
    CatchupRequest { from: InstanceId, to: InstanceId },
    /// An acceptor's votes for part of a requested range. `trim` is the acceptor's trim point:
    /// instances below it are gone.
    CatchupReply {
        trim: InstanceId,
        entries: Vec<AcceptedEntry>,
    },
    /// A learner tells proposers it has delivered every instance below `delivered_below`.
    Progress { delivered_below: InstanceId },
    /// The leader tells acceptors that every learner has delivered everything below `below`.
    Trim { below: InstanceId },
    /// A learner that needs instances the acceptors trimmed asks a peer learner for what it
    /// delivered from `from` on, out of its journal.
    PeerFetch { from: Position },
    /// A peer learner's answer, one of up to `answer_max_frames`: the values it delivered from
    /// `from` on, in order. Every instance below `through` is complete in this answer or an
    /// earlier one (no-op instances deliver nothing); values of instance `through` are the
    /// start of one not complete yet. `oldest` and `end`: its journal holds the instances in
    /// `[oldest, end)`; asked for what it does not hold it answers with no values and
    /// `through == from.instance`. `last`: the last answer to its fetch.
    PeerValues {
        from: Position,
        through: InstanceId,
        oldest: InstanceId,
        end: InstanceId,
        values: Vec<(Position, ClientValue)>,
        last: bool,
    },
    /// A learner holds a durable snapshot covering every instance below `below`: proposers
    /// trim acceptors by the newest any live learner holds.
    SnapshotHeld { below: InstanceId },
    /// A learner that needs what no peer's journal holds asks a peer learner for a snapshot
    /// image covering every instance below `at_least`: the image at `below` (the zero
    /// position: its newest), from byte `offset` on.
    SnapshotFetch {
        at_least: InstanceId,
        below: Position,
        offset: u64,
    },
    /// Bytes `[offset, offset + data.len())` of a peer learner's image at `below`, `total`
    /// bytes long; one of up to `answer_max_frames`, `last` marking the answer's last. A peer
    /// holding no image that covers `at_least` answers `total` 0.
    SnapshotChunk {
        below: Position,
        total: u64,
        offset: u64,
        last: bool,
        data: Bytes,
    },
}

impl Message {
    /// The message type code carried in the frame header.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Prepare { .. } => MessageKind::Prepare,
            Message::Promise { .. } => MessageKind::Promise,
            Message::Accept { .. } => MessageKind::Accept,
            Message::Accepted { .. } => MessageKind::Accepted,
            Message::Reject { .. } => MessageKind::Reject,
            Message::Heartbeat { .. } => MessageKind::Heartbeat,
            Message::ClientRequest { .. } => MessageKind::ClientRequest,
            Message::Redirect { .. } => MessageKind::Redirect,
            Message::CatchupRequest { .. } => MessageKind::CatchupRequest,
            Message::CatchupReply { .. } => MessageKind::CatchupReply,
            Message::Progress { .. } => MessageKind::Progress,
            Message::Trim { .. } => MessageKind::Trim,
            Message::PeerFetch { .. } => MessageKind::PeerFetch,
            Message::PeerValues { .. } => MessageKind::PeerValues,
            Message::SnapshotHeld { .. } => MessageKind::SnapshotHeld,
            Message::SnapshotFetch { .. } => MessageKind::SnapshotFetch,
            Message::SnapshotChunk { .. } => MessageKind::SnapshotChunk,
            Message::Decided { .. } => MessageKind::Decided,
        }
    }
}

/// Message type codes, stable on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageKind {
    Prepare = 1,
    Promise = 2,
    Accept = 3,
    Accepted = 4,
    Reject = 5,
    Heartbeat = 6,
    ClientRequest = 7,
    Redirect = 8,
    CatchupRequest = 9,
    CatchupReply = 10,
    Progress = 11,
    Trim = 12,
    PeerFetch = 13,
    PeerValues = 14,
    SnapshotHeld = 15,
    SnapshotFetch = 16,
    SnapshotChunk = 17,
    Decided = 18,
}

impl MessageKind {
    pub const ALL: [MessageKind; 18] = [
        MessageKind::Prepare,
        MessageKind::Promise,
        MessageKind::Accept,
        MessageKind::Accepted,
        MessageKind::Reject,
        MessageKind::Heartbeat,
        MessageKind::ClientRequest,
        MessageKind::Redirect,
        MessageKind::CatchupRequest,
        MessageKind::CatchupReply,
        MessageKind::Progress,
        MessageKind::Trim,
        MessageKind::PeerFetch,
        MessageKind::PeerValues,
        MessageKind::SnapshotHeld,
        MessageKind::SnapshotFetch,
        MessageKind::SnapshotChunk,
        MessageKind::Decided,
    ];

    /// Its name in metrics (`type` label).
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Prepare => "prepare",
            MessageKind::Promise => "promise",
            MessageKind::Accept => "accept",
            MessageKind::Accepted => "accepted",
            MessageKind::Reject => "reject",
            MessageKind::Heartbeat => "heartbeat",
            MessageKind::ClientRequest => "client_request",
            MessageKind::Redirect => "redirect",
            MessageKind::CatchupRequest => "catchup_request",
            MessageKind::CatchupReply => "catchup_reply",
            MessageKind::Progress => "progress",
            MessageKind::Trim => "trim",
            MessageKind::PeerFetch => "peer_fetch",
            MessageKind::PeerValues => "peer_values",
            MessageKind::SnapshotHeld => "snapshot_held",
            MessageKind::SnapshotFetch => "snapshot_fetch",
            MessageKind::SnapshotChunk => "snapshot_chunk",
            MessageKind::Decided => "decided",
        }
    }

    /// Its position in `ALL` (counters indexed by type).
    pub fn index(self) -> usize {
        self as usize - 1
    }

    pub fn from_code(code: u8) -> Option<MessageKind> {
        MessageKind::ALL.iter().copied().find(|k| *k as u8 == code)
    }
}

/// A message and where it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    pub to: NodeId,
    pub msg: Message,
}
