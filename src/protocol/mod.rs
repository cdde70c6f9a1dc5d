//! The sans-IO Multi-Paxos core: proposer, acceptor, learner and client session are plain
//! state machines. Each takes a message or a tick with the current time and returns
//! `Actions`; none touches a socket, a thread, a clock or a disk.

#![forbid(unsafe_code)]

mod acceptor;
mod actions;
mod client;
mod config;
pub mod image;
mod learner;
pub mod limits;
mod message;
mod proposer;
mod types;

pub use acceptor::{Acceptor, AcceptorCounters, AcceptorState};
pub use actions::{
    coalesce, Actions, Change, Delivery, Event, Install, Pending, Persist, Volatile,
};
pub use client::{Client, SubmitError};
pub use config::{ConfigError, Membership, ProtocolConfig};
pub use learner::{ClientDedup, Learner, LearnerSnapshot};
pub use message::{Envelope, Message, MessageKind};
pub use proposer::{Proposer, ProposerCounters};
pub use types::{
    AcceptedEntry, Ballot, Batch, ClientId, ClientValue, InstanceId, NodeId, Position,
};
