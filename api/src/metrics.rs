//! Prometheus metrics of the panel, registered in one registry served at `/metrics`.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// The `outcome` label of `mamba_node_cert_renewals_total`.
pub const RENEWAL_OUTCOMES: [&str; 3] = ["issued", "promoted", "failed"];

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
    /// What was cut from node messages, by kind (`grpc::bounds`).
    pub node_input_cut: IntCounterVec,
    /// Refresh tokens presented again (families revoked).
    pub refresh_reuse: IntCounter,
    /// Rate-limit checks answered in memory because Redis failed.
    pub limiter_fallbacks: IntCounter,
    /// Server events other replicas' subscribers missed because Redis failed.
    pub events_fanout_lost: IntCounter,
    /// Password hashings waiting for a slot.
    pub argon2_queue: IntGauge,
    /// Password hashings refused at once because the queue was full.
    pub argon2_shed: IntCounter,
    /// Commands sent to nodes, by action.
    pub commands: IntCounterVec,
    /// Node certificate renewals, by outcome (`issued`, `promoted`, `failed`).
    pub node_cert_renewals: IntCounterVec,
    /// Each node's pinned certificate's expiry, Unix seconds, by node.
    pub node_cert_expiry: IntGaugeVec,
    /// Whether each enabled node has a live stream (to any panel of the fleet), by node.
    pub node_online: IntGaugeVec,
    /// The issuing intermediate's expiry, Unix seconds (absent without an issuer).
    pub issuer_cert_expiry: IntGauge,
    /// REST requests answered, by method, route template and status.
    pub http_requests: IntCounterVec,
    /// REST connections open now.
    pub http_connections: IntGauge,
    /// REST connections closed at once because a cap was reached, by cap (`total`, `per_ip`).
    pub http_connections_refused: IntCounterVec,
    /// REST latency until the response head, by method, route template and status.
    pub http_latency: HistogramVec,
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
        let node_input_cut = IntCounterVec::new(
            Opts::new(
                "mamba_node_input_cut_total",
                "Cuts made to what nodes send: oversized messages, Hello entries past the cap, truncated console lines and strings",
            ),
            &["what"],
        )
        .expect("static metric definition is valid");
        let nodes_connected = IntGauge::new("mamba_nodes_connected", "Nodes with a live stream")
            .expect("static metric definition is valid");
        let refresh_reuse = IntCounter::new(
            "mamba_refresh_token_reuse_total",
            "Refresh tokens presented again; each revoked a session",
        )
        .expect("static metric definition is valid");
        let limiter_fallbacks = IntCounter::new(
            "mamba_limiter_fallbacks_total",
            "Rate-limit checks answered in memory because Redis failed",
        )
        .expect("static metric definition is valid");
        let events_fanout_lost = IntCounter::new(
            "mamba_events_fanout_lost_total",
            "Server events not published to the other replicas because Redis failed",
        )
        .expect("static metric definition is valid");
        let argon2_queue = IntGauge::new(
            "mamba_argon2_queue_depth",
            "Password hashings waiting for a slot",
        )
        .expect("static metric definition is valid");
        let argon2_shed = IntCounter::new(
            "mamba_argon2_shed_total",
            "Password hashings refused at once (503) because the queue was full",
        )
        .expect("static metric definition is valid");
        let commands = IntCounterVec::new(
            Opts::new(
                "mamba_node_commands_total",
                "Commands sent to nodes, by action",
            ),
            &["action"],
        )
        .expect("static metric definition is valid");
        let node_cert_renewals = IntCounterVec::new(
            Opts::new(
                "mamba_node_cert_renewals_total",
                "Node certificate renewals over the node channel, by outcome: issued (next pin recorded), promoted (the node came back with it), failed",
            ),
            &["outcome"],
        )
        .expect("static metric definition is valid");
        for outcome in RENEWAL_OUTCOMES {
            node_cert_renewals.with_label_values(&[outcome]);
        }
        let node_cert_expiry = IntGaugeVec::new(
            Opts::new(
                "mamba_node_cert_expiry_timestamp_seconds",
                "When each node's pinned certificate expires, Unix seconds",
            ),
            &["node"],
        )
        .expect("static metric definition is valid");
        let node_online = IntGaugeVec::new(
            Opts::new(
                "mamba_node_online",
                "1 when the enabled node has a live stream to the panel fleet, 0 otherwise",
            ),
            &["node"],
        )
        .expect("static metric definition is valid");
        let issuer_cert_expiry = IntGauge::new(
            "mamba_issuer_cert_expiry_timestamp_seconds",
            "When the panel's issuing intermediate expires, Unix seconds (0: no issuer)",
        )
        .expect("static metric definition is valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                "mamba_http_requests_total",
                "REST requests answered, by method, route template and status",
            ),
            &["method", "route", "status"],
        )
        .expect("static metric definition is valid");
        let http_connections = IntGauge::new(
            "mamba_http_connections_open",
            "REST connections open now (handshaking ones included)",
        )
        .expect("static metric definition is valid");
        let http_connections_refused = IntCounterVec::new(
            Opts::new(
                "mamba_http_connections_refused_total",
                "REST connections closed at once because a cap was reached, by cap",
            ),
            &["cap"],
        )
        .expect("static metric definition is valid");
        for cap in ["total", "per_ip"] {
            http_connections_refused.with_label_values(&[cap]);
        }
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "mamba_http_request_duration_seconds",
                "REST latency until the response head, by method, route template and status",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            &["method", "route", "status"],
        )
        .expect("static metric definition is valid");
        for metric in [
            Box::new(node_rejections.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(node_accepted.clone()),
            Box::new(nodes_connected.clone()),
            Box::new(node_input_cut.clone()),
            Box::new(refresh_reuse.clone()),
            Box::new(limiter_fallbacks.clone()),
            Box::new(events_fanout_lost.clone()),
            Box::new(argon2_queue.clone()),
            Box::new(argon2_shed.clone()),
            Box::new(commands.clone()),
            Box::new(node_cert_renewals.clone()),
            Box::new(node_cert_expiry.clone()),
            Box::new(node_online.clone()),
            Box::new(issuer_cert_expiry.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_connections.clone()),
            Box::new(http_connections_refused.clone()),
            Box::new(http_latency.clone()),
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
            node_input_cut,
            refresh_reuse,
            limiter_fallbacks,
            events_fanout_lost,
            argon2_queue,
            argon2_shed,
            commands,
            node_cert_renewals,
            node_cert_expiry,
            node_online,
            issuer_cert_expiry,
            http_requests,
            http_connections,
            http_connections_refused,
            http_latency,
        }
    }

    /// Counts one answered REST request. `route` is the matched template (never the raw
    /// path, so ids do not explode the label set).
    pub fn observe_request(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [method, route, status.as_str()];
        self.http_requests.with_label_values(&labels).inc();
        self.http_latency
            .with_label_values(&labels)
            .observe(seconds);
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
