-- The processors' outputs (docs/sink.md, "Processed topics").
-- profiles: the ProfileSnapshot fields 0008 lacks. `ADD COLUMN IF NOT EXISTS` is not
-- understood by ClickHouse 18.16: `zt migrate` runs it there as a plain ADD COLUMN of the
-- columns the table does not have yet (docs/migrations.md).
ALTER TABLE {database}.profiles
    ADD COLUMN IF NOT EXISTS merged_into String,
    ADD COLUMN IF NOT EXISTS net_ltv_minor Int64,
    ADD COLUMN IF NOT EXISTS aov_minor Int64,
    ADD COLUMN IF NOT EXISTS repurchase UInt8,
    ADD COLUMN IF NOT EXISTS avg_days_between_orders Nullable(Float64),
    ADD COLUMN IF NOT EXISTS last_order_id String,
    ADD COLUMN IF NOT EXISTS last_order_status String,
    ADD COLUMN IF NOT EXISTS last_shipment_status String,
    ADD COLUMN IF NOT EXISTS tickets UInt32,
    ADD COLUMN IF NOT EXISTS complaints UInt32,
    ADD COLUMN IF NOT EXISTS csat_ratings UInt32,
    ADD COLUMN IF NOT EXISTS csat_avg Nullable(Float64),
    ADD COLUMN IF NOT EXISTS consents_granted Array(String),
    ADD COLUMN IF NOT EXISTS consents_denied Array(String),
    ADD COLUMN IF NOT EXISTS rfm_r UInt8,
    ADD COLUMN IF NOT EXISTS rfm_f UInt8,
    ADD COLUMN IF NOT EXISTS rfm_m UInt8,
    ADD COLUMN IF NOT EXISTS rfm_segment String,
    ADD COLUMN IF NOT EXISTS high_value UInt8;

-- Person merges from zt.identity.merges: `from_person` continues as `into_person`. One row
-- per merged-away person; the newest version wins (ReplacingMergeTree(version)).
CREATE TABLE IF NOT EXISTS {database}.identity_merges
(
    from_person String,
    into_person String,
    version UInt64,
    merged_at_ms Int64,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY from_person;
