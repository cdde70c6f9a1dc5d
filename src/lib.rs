//! ethpaxos: Multi-Paxos over raw Ethernet frames.
//!
//! - [`protocol`]: the sans-IO state machines (proposer, acceptor, learner, client).
//! - [`wire`]: the one frame format every transport carries.
//! - [`sim`]: the deterministic simulator and its safety/liveness checker.
//! - [`cluster`]: an in-process cluster on threads (the demo).

pub mod app;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod protocol;
pub mod sim;
pub mod storage;
pub mod testbed;
pub mod transport;
#[cfg(feature = "dpdk")]
pub mod vswitch;
pub mod wire;
