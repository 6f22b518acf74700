//! The consumer's context: rebalance callbacks, librdkafka statistics (consumer lag) and
//! client errors, shared with the sink loop.
//!
//! Rebalance callbacks run inside the sink task's own `recv()` call, and the sink task
//! never polls while an INSERT is in flight (while a flush's INSERTs run in their task, it
//! only takes records it already received); so when a revoke callback returns, no
//! insert of a revoked partition is running, and the loop drops the revoked partitions'
//! buffered (not yet inserted) records before it does anything else. That is the "abandon"
//! half of "finish or abandon in-flight batches before the revoke completes".

use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::TopicPartitionList;
use zt_runtime::health::ReadyHandle;

use crate::metrics::SinkMetrics;

/// A topic and partition.
pub(crate) type PartKey = (String, i32);

/// What a rebalance did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RebalanceEvent {
    Assigned(Vec<PartKey>),
    Revoked(Vec<PartKey>),
}

/// The sink consumer's context.
#[derive(Clone)]
pub(crate) struct SinkContext {
    pub(crate) events: Arc<Mutex<Vec<RebalanceEvent>>>,
    metrics: SinkMetrics,
    kafka_ready: ReadyHandle,
}

impl std::fmt::Debug for SinkContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkContext").finish_non_exhaustive()
    }
}

fn keys(tpl: &TopicPartitionList) -> Vec<PartKey> {
    tpl.elements()
        .iter()
        .map(|e| (e.topic().to_owned(), e.partition()))
        .collect()
}

impl SinkContext {
    pub(crate) fn new(metrics: SinkMetrics, kafka_ready: ReadyHandle) -> Self {
        SinkContext {
            events: Arc::default(),
            metrics,
            kafka_ready,
        }
    }

    pub(crate) fn take_events(&self) -> Vec<RebalanceEvent> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn push(&self, e: RebalanceEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }
}

impl ClientContext for SinkContext {
    fn stats(&self, stats: Statistics) {
        for (topic, t) in &stats.topics {
            for (p, part) in &t.partitions {
                if *p < 0 {
                    continue;
                }
                let g = self
                    .metrics
                    .consumer_lag
                    .with_label_values(&[topic.as_str(), &p.to_string()]);
                if part.consumer_lag >= 0 {
                    g.set(part.consumer_lag);
                }
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.errors.with_label_values(&["kafka"]).inc();
        tracing::warn!(error = %error, reason, "kafka client error");
        if matches!(
            error.rdkafka_error_code(),
            Some(rdkafka::types::RDKafkaErrorCode::AllBrokersDown)
        ) {
            self.kafka_ready.set_not_ready("all brokers down");
        }
    }
}

impl ConsumerContext for SinkContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                self.push(RebalanceEvent::Revoked(keys(tpl)));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                self.metrics.errors.with_label_values(&["rebalance"]).inc();
                tracing::warn!(error = %e, "rebalance error");
            }
        }
    }

    fn post_rebalance(&self, _c: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            tracing::info!(partitions = tpl.count(), "partitions assigned");
            self.kafka_ready.set_ready();
            self.push(RebalanceEvent::Assigned(keys(tpl)));
        }
    }
}
