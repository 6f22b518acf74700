-- Customer service: one row per ticket event (opened, first_response, resolved, rated,
-- complaint). service_channel is the ticket's channel (phone, chat, ...); channel is the
-- acquisition/sales channel from the event context, as in every other table.
CREATE TABLE IF NOT EXISTS {database}.tickets
(
    event_id String,
    event_type String,
    ticket_id String,
    status String,
    service_channel String,
    category String,
    priority String,
    agent_id String,
    opened_at_ms Nullable(Int64),
    first_response_at_ms Nullable(Int64),
    resolved_at_ms Nullable(Int64),
    csat_score Nullable(Int32),
    is_complaint UInt8,
    complaint_reason String,
    crm_customer_id String,
    user_id String,
    person_id String DEFAULT '',
    order_id String,
    channel String,
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
ORDER BY (event_date, ticket_id, event_type, event_id);
