//! Prometheus metrics of one node (`metrics_address` in its YAML; http.rs serves them).
//!
//! recorder.rs is the hot path, registry.rs the Prometheus side. The hot path: every loop or
//! pipeline stage counts in plain integers it owns (`Recorder::counters`) and observes into
//! thread-local histograms. A few times a
//! second it publishes a copy of its counts to its shard and flushes its histograms. A
//! scrape sums the shards into the Prometheus families and encodes them. Names follow
//! Prometheus conventions: `ethpaxos_` prefix, `_total` counters, base units (`_seconds`),
//! a `node` label on every series and a `role` label on those of one role.

#![forbid(unsafe_code)]

pub mod http;
mod recorder;
mod registry;

pub use recorder::{Counters, Gauges, Recorder};
pub use registry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("metric {name}: {source}")]
    Register {
        name: String,
        source: prometheus::Error,
    },
    #[error("metrics_address {addr}: cannot listen: {why}")]
    Listen { addr: String, why: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NodeConfig;
    use crate::protocol::MessageKind;
    use std::time::Duration;

    fn config(roles: &str) -> NodeConfig {
        serde_yaml_ng::from_str(&format!(
            "node_id: 11\nmembers:\n  - {{id: 11, roles: {roles}, udp: \"127.0.0.1:7000\"}}\n"
        ))
        .unwrap()
    }

    fn line<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(series))
    }

    #[test]
    fn shards_are_summed_at_scrape_and_unpublished_counts_wait() {
        let m = Metrics::new(&config("[replica]")).unwrap();
        let (mut a, mut b) = (m.recorder(), m.recorder());
        a.counters.transport.received = 5;
        a.counters.transport.dropped_unauthenticated = 2;
        b.counters.transport.received = 7;
        b.message_in(MessageKind::Accept);
        b.message_in(MessageKind::Accept);
        b.counters.gauges.trim = Some(40);
        b.counters.deferred_prepares = 3;
        a.publish();
        b.publish();
        a.counters.transport.received = 1000;
        let text = m.render();
        assert_eq!(
            line(&text, "ethpaxos_frames_received_total{"),
            Some("ethpaxos_frames_received_total{node=\"11\"} 12")
        );
        assert!(text.contains("ethpaxos_frames_dropped_total{reason=\"failed_mac\",node=\"11\"} 2"));
        assert!(text.contains("ethpaxos_messages_received_total{type=\"accept\",node=\"11\"} 2"));
        assert!(text.contains("ethpaxos_trim_instance{role=\"acceptor\",node=\"11\"} 40"));
        assert!(text.contains(
            "ethpaxos_acceptor_deferred_prepares_total{role=\"acceptor\",node=\"11\"} 3"
        ));
        assert!(text.contains(
            "ethpaxos_acceptor_refused_top_round_total{role=\"acceptor\",node=\"11\"} 0"
        ));
        // A counter set from the shards again does not add up across scrapes.
        assert_eq!(
            line(&m.render(), "ethpaxos_frames_received_total{"),
            Some("ethpaxos_frames_received_total{node=\"11\"} 12")
        );
        a.publish();
        assert_eq!(
            line(&m.render(), "ethpaxos_frames_received_total{"),
            Some("ethpaxos_frames_received_total{node=\"11\"} 1007")
        );
    }

    #[test]
    fn a_node_has_the_families_of_its_roles_only() {
        let learner = Metrics::new(&config("[learner, client]")).unwrap();
        let mut r = learner.recorder();
        r.client_latency(Duration::from_micros(300));
        r.publish();
        let text = learner.render();
        assert!(text.contains("ethpaxos_values_delivered_total{role=\"learner\",node=\"11\"} 0"));
        assert!(
            text.contains("ethpaxos_client_latency_seconds_count{role=\"client\",node=\"11\"} 1")
        );
        assert!(!text.contains("ethpaxos_group_commits_total"), "{text}");
        assert!(!text.contains("ethpaxos_acceptor_refused"), "{text}");
        assert!(!text.contains("ethpaxos_phase2_latency_seconds"), "{text}");
        let info = line(&text, "ethpaxos_node_info{").unwrap();
        assert!(
            info.contains("roles=\"learner,client\"") && info.ends_with("} 1"),
            "{info}"
        );
    }
}
