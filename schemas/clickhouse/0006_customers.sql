-- CRM: one row per customer event (registered, updated, tier and points changes, consent
-- changes). A log, not a current state: the latest value of a field per customer is
-- argMax(field, event_time_ms) over the rows where it is set. Consents are parallel arrays.
CREATE TABLE IF NOT EXISTS {database}.customers
(
    event_id String,
    event_type String,
    customer_id String,
    registered_at_ms Nullable(Int64),
    registration_channel String,
    tier String,
    previous_tier String,
    points_delta Nullable(Int64),
    points_balance Nullable(Int64),
    consent_purposes Array(String),
    consent_granted Array(UInt8),
    gender String,
    birth_year Nullable(Int32),
    province String,
    city String,
    user_id String,
    anonymous_id String,
    phone_hash String,
    email_hash String,
    person_id String DEFAULT '',
    channel String,
    campaign String,
    private_domain UInt8,
    occurred_at_ms Int64,
    received_at_ms Int64,
    event_time_ms Int64,
    event_time DateTime('UTC') MATERIALIZED toDateTime(intDiv(event_time_ms, 1000), 'UTC'),
    event_date Date MATERIALIZED toDate(toDateTime(intDiv(event_time_ms, 1000), 'UTC')),
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (customer_id, event_time_ms, event_id);
