-- ERP orders: one row per order event (created, paid, cancelled, refunded), and one row
-- per order line of each of those events. Money in integer minor units of `currency`.
-- A refund event's refund_minor is what that event refunds, not a running total.
CREATE TABLE IF NOT EXISTS {database}.orders
(
    event_id String,
    event_type String,
    order_id String,
    status String,
    currency String,
    subtotal_minor Int64,
    discount_minor Int64,
    shipping_minor Int64,
    total_minor Int64,
    refund_minor Int64,
    refund_reason String,
    payment_method String,
    coupon_codes Array(String),
    store_id String,
    line_count UInt32,
    item_quantity Int64,
    crm_customer_id String,
    user_id String,
    anonymous_id String,
    phone_hash String,
    email_hash String,
    person_id String DEFAULT '',
    channel String,
    campaign String,
    utm_source String,
    utm_medium String,
    utm_campaign String,
    private_domain UInt8,
    experiment_ids Array(String),
    experiment_variants Array(String),
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
ORDER BY (event_date, order_id, event_type, event_id);

CREATE TABLE IF NOT EXISTS {database}.order_lines
(
    event_id String,
    event_type String,
    order_id String,
    status String,
    line_no Int32,
    sku String,
    product_id String,
    product_name String,
    category String,
    quantity Int32,
    unit_price_minor Int64,
    discount_minor Int64,
    coupon_code String,
    refunded_quantity Int32,
    currency String,
    crm_customer_id String,
    person_id String DEFAULT '',
    channel String,
    campaign String,
    private_domain UInt8,
    event_time_ms Int64,
    event_time DateTime('UTC') MATERIALIZED toDateTime(intDiv(event_time_ms, 1000), 'UTC'),
    event_date Date MATERIALIZED toDate(toDateTime(intDiv(event_time_ms, 1000), 'UTC')),
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(event_date)
ORDER BY (event_date, order_id, event_id, line_no);
