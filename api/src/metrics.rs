//! Prometheus metrics of the panel, registered in one registry served at `/metrics`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

/// The panel's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Node-channel connections refused, by reason.
    pub node_rejections: IntCounterVec,
    /// Node-channel connections admitted.
    pub node_accepted: IntCounter,
    /// Nodes with a live stream.
    pub nodes_connected: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let node_rejections = IntCounterVec::new(
            Opts::new(
                "mamba_node_rejections_total",
                "Node-channel connections refused, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition is valid");
        let node_accepted = IntCounter::new(
            "mamba_node_connections_accepted_total",
            "Node-channel connections admitted",
        )
        .expect("static metric definition is valid");
        let nodes_connected = IntGauge::new("mamba_nodes_connected", "Nodes with a live stream")
            .expect("static metric definition is valid");
        for metric in [
            Box::new(node_rejections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(node_accepted.clone()),
            Box::new(nodes_connected.clone()),
        ] {
            registry
                .register(metric)
                .expect("each metric is registered once");
        }
        Metrics {
            registry,
            node_rejections,
            node_accepted,
            nodes_connected,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
