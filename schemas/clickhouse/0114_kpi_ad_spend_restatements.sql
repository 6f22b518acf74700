-- Ad spend restatements: the latest report of a day is the one the ad platform made last
-- (its own time, event_time_ms), and only between reports of the same time the one
-- received last. 0100 ordered by received_at_ms alone, so a restatement delivered in the
-- same request as the report it corrects (a backfill, or `zt generate` replaying a month
-- in seconds) tied with it and either could win; a late retry of an old report also
-- replaced a newer restatement. Found by the demo's ground-truth test (docs/demo.md).
-- (DROP TABLE: 18.16 has no DROP VIEW; a view is a table to DROP on every version.)
DROP TABLE IF EXISTS {database}.kpi_ad_spend_daily;

CREATE VIEW IF NOT EXISTS {database}.kpi_ad_spend_daily AS
SELECT
    day,
    channel,
    campaign_id,
    currency,
    argMax(a_campaign_name, a_report_order) AS campaign_name,
    argMax(a_spend, a_report_order) AS spend_minor,
    argMax(a_impressions, a_report_order) AS impressions,
    argMax(a_clicks, a_report_order) AS clicks,
    count() AS reports
FROM
(
    SELECT day, channel, campaign_id, currency,
           (event_time_ms, received_at_ms) AS a_report_order,
           campaign_name AS a_campaign_name, spend_minor AS a_spend,
           impressions AS a_impressions, clicks AS a_clicks
    FROM {database}.ad_spend
) AS a
GROUP BY day, channel, campaign_id, currency;
