-- Funnel and experiment aggregates from zt.funnels. Each key's newest version wins
-- (ReplacingMergeTree(version)); read with FINAL or argMax(..., version).
-- funnel_aggregates: persons who reached `step` of `funnel_id` on `day` (UTC), by channel,
-- campaign and experiment variant ('' when not split).
CREATE TABLE IF NOT EXISTS {database}.funnel_aggregates
(
    funnel_id String,
    day Date,
    channel String,
    campaign String,
    experiment_id String,
    variant String,
    step UInt8,
    step_name String,
    persons UInt64,
    version UInt64,
    updated_at_ms Int64,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (funnel_id, day, channel, campaign, experiment_id, variant, step);

-- experiment_aggregates: per experiment, variant and day, the persons exposed and
-- converted and their revenue (minor units of currency).
CREATE TABLE IF NOT EXISTS {database}.experiment_aggregates
(
    experiment_id String,
    variant String,
    day Date,
    exposed UInt64,
    converted UInt64,
    revenue_minor Int64,
    currency String,
    version UInt64,
    updated_at_ms Int64,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (experiment_id, variant, day, currency);
