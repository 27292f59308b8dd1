//! Prometheus metrics of the server (`GET /metrics`, text format).

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the server exports, registered in its own registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered, by endpoint and HTTP status.
    pub requests: IntCounterVec,
    /// Seconds from a request's arrival to its answer, by endpoint.
    pub request_seconds: HistogramVec,
    /// Seconds a request waited in the queue before the engine took it.
    pub queue_seconds: Histogram,
    /// Seconds of one batched search.
    pub inference_seconds: Histogram,
    /// Queries per batched search.
    pub batch_size: Histogram,
    /// Failures by cause: bad_request, queue_full, payload_too_large, engine, not_ready, items_disabled.
    pub failures: IntCounterVec,
    /// Returned items that are not in the catalog, not available, or break the request's constraints. Must
    /// stay 0.
    pub invalid_items: IntCounter,
    /// Requests waiting for the engine now.
    pub queue_depth: IntGauge,
    pub catalog_version: IntGauge,
    pub available_items: IntGauge,
    /// The long tail's share of each answered list (items outside the most popular `serve.head_share` of the
    /// training catalogue by training interactions; items added later count as tail).
    pub long_tail_share: Histogram,
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("valid metric")
}

impl Metrics {
    pub fn new() -> Self {
        let secs = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        let m = Metrics {
            registry: Registry::new(),
            requests: IntCounterVec::new(
                Opts::new("reg4rec_requests_total", "Requests answered"),
                &["endpoint", "status"],
            )
            .expect("valid metric"),
            request_seconds: HistogramVec::new(
                HistogramOpts::new("reg4rec_request_seconds", "Request duration").buckets(secs.clone()),
                &["endpoint"],
            )
            .expect("valid metric"),
            queue_seconds: histogram(
                "reg4rec_queue_seconds",
                "Time waiting for the engine",
                secs.clone(),
            ),
            inference_seconds: histogram(
                "reg4rec_inference_seconds",
                "Duration of one batched search",
                secs,
            ),
            batch_size: histogram(
                "reg4rec_batch_queries",
                "Queries per batched search",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
            ),
            failures: IntCounterVec::new(
                Opts::new("reg4rec_failures_total", "Failed requests by cause"),
                &["cause"],
            )
            .expect("valid metric"),
            invalid_items: IntCounter::new(
                "reg4rec_invalid_items_total",
                "Returned items outside the catalog, unavailable, or breaking the request's constraints",
            )
            .expect("valid metric"),
            queue_depth: IntGauge::new("reg4rec_queue_depth", "Requests waiting for the engine")
                .expect("valid metric"),
            catalog_version: IntGauge::new("reg4rec_catalog_version", "Catalog version")
                .expect("valid metric"),
            available_items: IntGauge::new("reg4rec_available_items", "Items that may be recommended")
                .expect("valid metric"),
            long_tail_share: histogram(
                "reg4rec_list_long_tail_share",
                "Share of each answered list's items outside the most popular serve.head_share of the catalogue",
                (0..=10).map(|i| f64::from(i) / 10.0).collect(),
            ),
        };
        let r = &m.registry;
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.request_seconds.clone()),
            Box::new(m.queue_seconds.clone()),
            Box::new(m.inference_seconds.clone()),
            Box::new(m.batch_size.clone()),
            Box::new(m.failures.clone()),
            Box::new(m.invalid_items.clone()),
            Box::new(m.queue_depth.clone()),
            Box::new(m.catalog_version.clone()),
            Box::new(m.available_items.clone()),
            Box::new(m.long_tail_share.clone()),
        ] {
            r.register(c).expect("metric names are distinct");
        }
        m
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
