-- Canonical events: one row per zt.Event consumed from zt.events.<source>, every source.
-- Written by `zt sink`. Times are UTC milliseconds (Int64) with DateTime/Date columns
-- materialized from event_time_ms for bucketing. Optional strings are '' when absent.
-- _topic/_partition/_offset locate the Kafka record the row came from; the sink's
-- effectively-once resume relies on them (docs/sink.md).
CREATE TABLE IF NOT EXISTS {database}.events
(
    event_id String,
    event_type String,
    source String,
    source_event_id String,
    occurred_at_ms Int64,
    sent_at_ms Nullable(Int64),
    received_at_ms Int64,
    event_time_ms Int64,
    event_time DateTime('UTC') MATERIALIZED toDateTime(intDiv(event_time_ms, 1000), 'UTC'),
    event_date Date MATERIALIZED toDate(toDateTime(intDiv(event_time_ms, 1000), 'UTC')),
    crm_customer_id String,
    user_id String,
    anonymous_id String,
    phone_hash String,
    email_hash String,
    order_id String,
    waybill_no String,
    ticket_id String,
    person_id String DEFAULT '',
    channel String,
    campaign String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_term String,
    utm_content String,
    private_domain UInt8,
    experiment_ids Array(String),
    experiment_variants Array(String),
    device_type String,
    os String,
    app_version String,
    locale String,
    ip_country String,
    event_name String,
    amount_minor Int64,
    currency String,
    properties_json String,
    traits_json String,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, source, event_type, event_id);
