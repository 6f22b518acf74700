-- The KPIs with a target in the operations plan (docs/bi.md), one row each, for a
-- dashboard's headline tiles: value, target, whether the target is met (NULL when the
-- value is undefined, e.g. no data yet), and `direction` ('>=' or '<=' the target).
-- dimension is the acquisition channel (LTV/CAC), the currency (promotion spend share)
-- or '' (all data). Two KPIs without a target in the plan (first response SLA share,
-- complaint rate) are listed with a NULL target.

CREATE VIEW IF NOT EXISTS {database}.kpi_scorecard AS
SELECT 'ltv_cac_ratio' AS kpi, channel AS dimension,
       CAST(ltv_cac_ratio AS Nullable(Float64)) AS value,
       CAST(3 AS Nullable(Float64)) AS target, '>=' AS direction,
       CAST(meets_target AS Nullable(UInt8)) AS meets_target
FROM {database}.kpi_ltv_cac
UNION ALL
SELECT 'repurchase_rate' AS kpi, '' AS dimension,
       CAST(repurchase_rate AS Nullable(Float64)) AS value,
       CAST(0.45 AS Nullable(Float64)) AS target, '>=' AS direction,
       CAST(meets_target AS Nullable(UInt8)) AS meets_target
FROM {database}.kpi_repurchase_rate
UNION ALL
SELECT 'csat_avg' AS kpi, '' AS dimension,
       CAST(csat_avg AS Nullable(Float64)) AS value,
       CAST(4.5 AS Nullable(Float64)) AS target, '>=' AS direction,
       CAST(meets_target AS Nullable(UInt8)) AS meets_target
FROM {database}.kpi_csat
UNION ALL
SELECT 'promotion_spend_share' AS kpi, currency AS dimension,
       CAST(promotion_spend_share AS Nullable(Float64)) AS value,
       CAST(0.15 AS Nullable(Float64)) AS target, '<=' AS direction,
       CAST(meets_target AS Nullable(UInt8)) AS meets_target
FROM {database}.kpi_promotion_spend_share
UNION ALL
SELECT 'private_domain_share' AS kpi, '' AS dimension,
       CAST(private_domain_share AS Nullable(Float64)) AS value,
       CAST(0.8 AS Nullable(Float64)) AS target, '>=' AS direction,
       CAST(meets_target AS Nullable(UInt8)) AS meets_target
FROM {database}.kpi_private_domain_share
UNION ALL
SELECT 'first_response_sla_share' AS kpi, '' AS dimension,
       CAST(sla_share AS Nullable(Float64)) AS value,
       CAST(NULL AS Nullable(Float64)) AS target, '>=' AS direction,
       CAST(NULL AS Nullable(UInt8)) AS meets_target
FROM {database}.kpi_first_response
UNION ALL
SELECT 'complaint_rate' AS kpi, '' AS dimension,
       CAST(complaint_rate AS Nullable(Float64)) AS value,
       CAST(NULL AS Nullable(Float64)) AS target, '<=' AS direction,
       CAST(NULL AS Nullable(UInt8)) AS meets_target
FROM {database}.kpi_complaint_rate;
