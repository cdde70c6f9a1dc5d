//! Transports move frames between nodes. All carry the same frame (src/wire); each drops and
//! counts what is not for this cluster.

pub mod udp;

/// Frame counters a transport keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub sent: u64,
    pub received: u64,
    pub dropped_bad_frame: u64,
    pub dropped_foreign_cluster: u64,
    pub dropped_non_member: u64,
    pub send_errors: u64,
}
