//! Shared helpers of the integration tests. Every test talks to the local stack that
//! `make test` (deploy/local/stack.sh up) starts; addresses come from the environment with
//! the stack's defaults:
//!
//! - `ZT_TEST_KAFKA` (default `127.0.0.1:9092`)
//! - `ZT_TEST_CLICKHOUSE_URL` (default `http://127.0.0.1:8123`)
//!
//! Each test makes its own topics, groups and databases with unique names, so tests run in
//! parallel and leave no shared state behind.

pub mod ingest;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use zt_kafka::KafkaConfig;
use zt_kafka::config::{ConsumerConfig, ProducerConfig};
use zt_model::*;

/// The broker the tests use.
pub fn kafka_bootstrap() -> String {
    std::env::var("ZT_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The ClickHouse HTTP URL the tests use.
pub fn clickhouse_url() -> String {
    std::env::var("ZT_TEST_CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A name unique to this process and call: `<prefix>_<pid>_<millis>_<n>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{prefix}_{}_{ms}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Kafka settings for tests: the local broker and short group timeouts (a first group
/// join on tansu waits about the session timeout; see INFRA.md).
pub fn kafka_config() -> KafkaConfig {
    KafkaConfig {
        bootstrap_servers: kafka_bootstrap(),
        client_id: "zt-tests".into(),
        producer: ProducerConfig {
            linger_ms: 5,
            compression: "lz4".into(),
            message_timeout_ms: 30_000,
            batch_size_bytes: 1_000_000,
        },
        consumer: ConsumerConfig {
            session_timeout_ms: 6_000,
            max_poll_interval_ms: 7_000,
            auto_offset_reset: "earliest".into(),
            auto_commit_interval_ms: 1_000,
        },
        options: BTreeMap::new(),
    }
}

/// A deterministic order event `i` with varied payload, for round trips.
pub fn order_event(i: u32) -> Event {
    let t = 1_767_225_600_000 + i64::from(i) * 1_000;
    Event {
        event_id: format!("evt-{i:05}"),
        event_type: if i.is_multiple_of(3) {
            "order.paid"
        } else {
            "order.created"
        }
        .into(),
        source: Source::Erp,
        source_event_id: Some(format!("erp-{i}")),
        occurred_at: t,
        sent_at: Some(t + 20),
        received_at: t + 50,
        event_time: t + 30,
        identities: Identities {
            crm_customer_id: Some(format!("C{}", i % 7)),
            order_id: Some(format!("O{i}")),
            ..Default::default()
        },
        context: Context {
            channel: Some(["tmall", "jd", "wechat_mini"][i as usize % 3].into()),
            private_domain: i.is_multiple_of(2),
            ..Default::default()
        },
        payload: Payload::Order(OrderPayload {
            order_id: format!("O{i}"),
            status: if i.is_multiple_of(3) {
                "paid"
            } else {
                "created"
            }
            .into(),
            currency: "CNY".into(),
            subtotal_minor: 10_000 + i64::from(i),
            discount_minor: 500,
            shipping_minor: 0,
            total_minor: 9_500 + i64::from(i),
            lines: vec![OrderLine {
                line_no: 1,
                sku: format!("SKU-{}", i % 11),
                product_name: Some("保温杯".into()),
                quantity: 1 + (i % 3) as i32,
                unit_price_minor: 10_000,
                ..Default::default()
            }],
            ..Default::default()
        }),
        person_id: None,
    }
}
