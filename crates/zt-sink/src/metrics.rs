//! The sink's Prometheus metrics. Labels are table, topic, partition, operation, reason
//! and error type: never ids or personal data.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
};

/// Every metric the sink exports.
#[derive(Debug, Clone)]
pub struct SinkMetrics {
    /// `zt_sink_records_received_total{topic}`: Kafka records consumed (counted when
    /// their batch is committed).
    pub records_received: IntCounterVec,
    /// `zt_sink_bytes_received_total{topic}`: Kafka value bytes consumed (idem).
    pub bytes_received: IntCounterVec,
    /// `zt_sink_rows_inserted_total{table}`.
    pub rows_inserted: IntCounterVec,
    /// `zt_sink_bytes_inserted_total{table}`: RowBinary bytes inserted (before compression).
    pub bytes_inserted: IntCounterVec,
    /// `zt_sink_rows_skipped_total{table}`: rows not inserted because ClickHouse already
    /// held their record (the effectively-once resume at work), or because the record was a
    /// tombstone (no value) of a compacted processed topic (one per tombstone).
    pub rows_skipped: IntCounterVec,
    /// `zt_sink_events_deduplicated_total{topic}`: event records not stored because their
    /// `event_id` was stored from the same partition shortly before (`dedup_window_records`).
    pub events_deduplicated: IntCounterVec,
    /// `zt_sink_insert_duration_seconds{table}`.
    pub insert_duration: HistogramVec,
    /// `zt_sink_batch_rows`: rows per flushed partition batch (all tables).
    pub batch_rows: Histogram,
    /// `zt_sink_batch_records`: records per flushed partition batch.
    pub batch_records: Histogram,
    /// `zt_sink_consumer_lag_records{topic,partition}`.
    pub consumer_lag: IntGaugeVec,
    /// `zt_sink_retries_total{operation}`: retried inserts, commits, resume reads,
    /// dead-letter sends.
    pub retries: IntCounterVec,
    /// `zt_sink_dead_lettered_total{reason}`: records sent to the dead-letter topic.
    pub dead_lettered: IntCounterVec,
    /// `zt_sink_errors_total{error_type}`: failures of any kind (also retried ones).
    pub errors: IntCounterVec,
    /// `zt_sink_commits_total`: successful offset commits.
    pub commits: IntCounterVec,
    /// `zt_sink_flushes_total{reason}`: flushes started because the batches were full
    /// (`full`), the oldest record reached `batch_max_age_ms` (`age`), or the sink had read
    /// its partitions to their end with at least a quarter of a batch (`caught_up`).
    pub flushes: IntCounterVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: T) -> T {
    // A second registration (two sinks in one process, tests) keeps the first; the
    // metric still works, it is just not exported twice.
    let _ = r.register(Box::new(m.clone()));
    m
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    reg(
        r,
        IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"),
    )
}

impl SinkMetrics {
    /// Creates the metrics and registers them on `registry`.
    pub fn new(registry: &Registry) -> Self {
        let r = registry;
        SinkMetrics {
            records_received: counter(
                r,
                "zt_sink_records_received_total",
                "Kafka records consumed by the sink",
                &["topic"],
            ),
            bytes_received: counter(
                r,
                "zt_sink_bytes_received_total",
                "Kafka record value bytes consumed by the sink",
                &["topic"],
            ),
            rows_inserted: counter(
                r,
                "zt_sink_rows_inserted_total",
                "rows inserted into ClickHouse",
                &["table"],
            ),
            bytes_inserted: counter(
                r,
                "zt_sink_bytes_inserted_total",
                "RowBinary bytes inserted into ClickHouse, before compression",
                &["table"],
            ),
            rows_skipped: counter(
                r,
                "zt_sink_rows_skipped_total",
                "rows not inserted because ClickHouse already held their record (or tombstones)",
                &["table"],
            ),
            events_deduplicated: counter(
                r,
                "zt_sink_events_deduplicated_total",
                "event records not stored because their event_id was stored shortly before",
                &["topic"],
            ),
            insert_duration: reg(
                r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "zt_sink_insert_duration_seconds",
                        "duration of one INSERT into ClickHouse",
                    )
                    .buckets(prometheus::exponential_buckets(0.001, 2.0, 16).unwrap_or_default()),
                    &["table"],
                )
                .expect("static metric definition"),
            ),
            batch_rows: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "zt_sink_batch_rows",
                        "rows per flushed partition batch, all tables",
                    )
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 11).unwrap_or_default()),
                )
                .expect("static metric definition"),
            ),
            batch_records: reg(
                r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "zt_sink_batch_records",
                        "Kafka records per flushed partition batch",
                    )
                    .buckets(prometheus::exponential_buckets(1.0, 4.0, 11).unwrap_or_default()),
                )
                .expect("static metric definition"),
            ),
            consumer_lag: reg(
                r,
                IntGaugeVec::new(
                    Opts::new(
                        "zt_sink_consumer_lag_records",
                        "records between the sink's position and the partition's end",
                    ),
                    &["topic", "partition"],
                )
                .expect("static metric definition"),
            ),
            retries: counter(
                r,
                "zt_sink_retries_total",
                "operations retried after a transient failure",
                &["operation"],
            ),
            dead_lettered: counter(
                r,
                "zt_sink_dead_lettered_total",
                "records sent to the dead-letter topic",
                &["reason"],
            ),
            errors: counter(
                r,
                "zt_sink_errors_total",
                "sink failures by type, retried ones included",
                &["error_type"],
            ),
            commits: counter(
                r,
                "zt_sink_commits_total",
                "successful offset commits",
                &["result"],
            ),
            flushes: counter(
                r,
                "zt_sink_flushes_total",
                "flushes started, by why",
                &["reason"],
            ),
        }
    }
}
