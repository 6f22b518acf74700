-- Marketing: one row per ad_spend.reported event. A restated (channel, campaign_id, day,
-- currency) appears again; the latest report wins: argMax(spend_minor, received_at_ms).
CREATE TABLE IF NOT EXISTS {database}.ad_spend
(
    event_id String,
    channel String,
    campaign_id String,
    campaign_name String,
    day Date,
    spend_minor Int64,
    currency String,
    impressions Int64,
    clicks Int64,
    occurred_at_ms Int64,
    received_at_ms Int64,
    event_time_ms Int64,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = MergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (day, channel, campaign_id, event_id);
