//! DPDK: the config section (every build) and, with cargo feature `dpdk`, the node
//! transport over a DPDK port (eal.rs is the binding, port.rs the transport).

pub mod config;
#[cfg(feature = "dpdk")]
mod eal;
#[cfg(feature = "dpdk")]
mod port;

#[cfg(feature = "dpdk")]
pub use eal::{first_allowed_core, open_port, DpdkError, Eal, Pool, Port, BURST};
#[cfg(feature = "dpdk")]
pub use port::DpdkTransport;
