-- Profile snapshots from zt.profiles, one row per snapshot; the newest version per
-- person_id wins (ReplacingMergeTree(version)). Read with FINAL or argMax(..., version).
CREATE TABLE IF NOT EXISTS {database}.profiles
(
    person_id String,
    version UInt64,
    updated_at_ms Int64,
    crm_customer_id String,
    user_ids Array(String),
    anonymous_ids Array(String),
    phone_hash String,
    email_hash String,
    first_seen_at_ms Int64,
    last_seen_at_ms Int64,
    acquisition_channel String,
    acquisition_campaign String,
    first_order_at_ms Nullable(Int64),
    last_order_at_ms Nullable(Int64),
    paid_orders UInt32,
    paid_total_minor Int64,
    refunded_minor Int64,
    currency String,
    tier String,
    points_balance Nullable(Int64),
    province String,
    city String,
    private_domain UInt8,
    traits_json String,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY person_id;
