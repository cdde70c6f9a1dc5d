//! ethpaxos: Multi-Paxos over raw Ethernet frames.
//!
//! **Core** (sans-IO: no sockets, threads, clocks or disks)
//! - [`protocol`]: the proposer, acceptor, learner and client-session state machines, the
//!   messages they exchange, the frame-size model they plan by, and `Pending`/`Persist`:
//!   the type that lets a message out only after its changes are durable.
//! - [`wire`]: the one frame format every transport carries (codec and authentication).
//!
//! **IO**
//! - [`storage`]: acceptor storage (RocksDB or memory), group commit under the fsync
//!   policy, the proposer's round file.
//! - [`transport`]: AF_PACKET, UDP and (feature `dpdk`) DPDK poll-mode ports.
//!
//! **Runtime**
//! - [`driver`]: the one driver: a node's roles, the routing table, ticks, client sessions,
//!   commit-then-release, 2b merging and accounting. Every runtime below runs it.
//! - [`node`]: a node process built from its YAML config, the driver on one loop.
//! - [`pipeline`]: the staged node: the driver's roles on pinned stages joined by rings.
//!
//! **Operations**
//! - [`config`]: the node's YAML config and its validation.
//! - [`metrics`]: Prometheus metrics.
//! - [`app`]: embedding a node in an application; the delivered-stream socket.
//!
//! **Lab tools**
//! - [`sim`]: the deterministic simulator (the driver per simulated node) and its checker.
//! - [`cluster`]: the in-process demo cluster (the driver per thread).
//! - [`bench`]: `ethpaxos bench`, the thesis' experiment.
//! - [`testbed`]: network-namespace clusters of node processes.
//! - `vswitch` (feature `dpdk`): a vhost-user switch for virtio testbeds.
//! - [`vm`]: a node inside a QEMU virtual machine (the VM testbed's host side).

// Core
pub mod protocol;
pub mod wire;

// IO
pub mod journal;
pub mod storage;
pub mod transport;

// Runtime
pub mod driver;
pub mod node;
pub mod pipeline;

// Operations
pub mod app;
pub mod config;
pub mod metrics;

// Lab tools
pub mod bench;
pub mod cluster;
pub mod sim;
pub mod testbed;
pub mod vm;
#[cfg(feature = "dpdk")]
pub mod vswitch;
