//! Metrics of the ingest service (`zt_ingest_*`). Labels carry route templates, status
//! codes, source names and rejection reasons only: never keys, ids or personal data.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, exponential_buckets,
};

/// Every ingest metric.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// `zt_ingest_requests_total{route,status}`.
    pub requests: IntCounterVec,
    /// `zt_ingest_events_accepted_total{source}`: published (or deduplicated) events.
    pub accepted: IntCounterVec,
    /// `zt_ingest_events_rejected_total{source,reason}`: events sent to the dead-letter topic.
    pub rejected: IntCounterVec,
    /// `zt_ingest_events_deduplicated_total{source}`: repeated ids acknowledged, not published.
    pub deduplicated: IntCounterVec,
    /// `zt_ingest_events_suppressed_total{source}`: events of erased persons or
    /// identifiers (`zt erase`), acknowledged and not published.
    pub suppressed: IntCounterVec,
    /// `zt_ingest_received_bytes_total{source}`: request body bytes.
    pub bytes: IntCounterVec,
    /// `zt_ingest_produce_latency_seconds{topic_kind}`: send to broker acknowledgement.
    pub produce_latency: HistogramVec,
    /// `zt_ingest_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `zt_ingest_errors_total{error_type}`: publish failures and the like.
    pub errors: IntCounterVec,
}

impl IngestMetrics {
    /// Creates and registers the metrics.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = IngestMetrics {
            requests: IntCounterVec::new(
                Opts::new(
                    "zt_ingest_requests_total",
                    "HTTP requests by route and status",
                ),
                &["route", "status"],
            )?,
            accepted: IntCounterVec::new(
                Opts::new(
                    "zt_ingest_events_accepted_total",
                    "events accepted, by source",
                ),
                &["source"],
            )?,
            rejected: IntCounterVec::new(
                Opts::new(
                    "zt_ingest_events_rejected_total",
                    "events rejected to the dead-letter topic, by source and reason",
                ),
                &["source", "reason"],
            )?,
            deduplicated: IntCounterVec::new(
                Opts::new(
                    "zt_ingest_events_deduplicated_total",
                    "repeated event ids acknowledged without publishing, by source",
                ),
                &["source"],
            )?,
            suppressed: IntCounterVec::new(
                Opts::new(
                    "zt_ingest_events_suppressed_total",
                    "events of erased persons or identifiers acknowledged without publishing, by source",
                ),
                &["source"],
            )?,
            bytes: IntCounterVec::new(
                Opts::new(
                    "zt_ingest_received_bytes_total",
                    "request body bytes, by source",
                ),
                &["source"],
            )?,
            produce_latency: HistogramVec::new(
                HistogramOpts::new(
                    "zt_ingest_produce_latency_seconds",
                    "time from send to broker acknowledgement of a request's records",
                )
                .buckets(exponential_buckets(0.0005, 2.0, 16)?),
                &["topic_kind"],
            )?,
            in_flight: IntGauge::new("zt_ingest_requests_in_flight", "requests being handled")?,
            errors: IntCounterVec::new(
                Opts::new("zt_ingest_errors_total", "errors by type"),
                &["error_type"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.accepted.clone()))?;
        registry.register(Box::new(m.rejected.clone()))?;
        registry.register(Box::new(m.deduplicated.clone()))?;
        registry.register(Box::new(m.suppressed.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.produce_latency.clone()))?;
        registry.register(Box::new(m.in_flight.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        Ok(m)
    }
}
