-- Logistics: one row per shipment event (created, dispatched, delivered, exception,
-- returned). Delivery time is the delivered row's event_time minus the dispatched (or
-- created) row's event_time of the same waybill_no.
CREATE TABLE IF NOT EXISTS {database}.shipments
(
    event_id String,
    event_type String,
    waybill_no String,
    order_id String,
    carrier String,
    status String,
    exception_code String,
    exception_reason String,
    warehouse String,
    destination_city String,
    promised_at_ms Nullable(Int64),
    crm_customer_id String,
    person_id String DEFAULT '',
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
ORDER BY (event_date, waybill_no, event_type, event_id);
