-- KPI: LTV/CAC per acquisition channel (target >= 3).
--
-- For each acquisition channel and currency: the customers acquired (all time), their
-- average net LTV, the channel's ad spend (all time) and CAC = spend / customers, and
-- ltv_cac_ratio = avg LTV / CAC. NULL where the channel had no spend or no customer.

CREATE VIEW IF NOT EXISTS {database}.kpi_ltv_cac AS
SELECT
    channel,
    currency,
    l_customers AS customers,
    l_net AS net_ltv_minor,
    if(l_customers > 0, l_net / l_customers, NULL) AS avg_ltv_minor,
    s_spend AS spend_minor,
    if(s_spend > 0 AND l_customers > 0, s_spend / l_customers, NULL) AS cac_minor,
    if(s_spend > 0 AND l_customers > 0, l_net / s_spend, NULL) AS ltv_cac_ratio,
    toFloat64(3) AS target,
    if(s_spend > 0 AND l_customers > 0, toUInt8(l_net / s_spend >= 3), NULL) AS meets_target
FROM
(
    SELECT acquisition_channel AS channel, currency, count() AS l_customers,
           sum(net_minor) AS l_net
    FROM {database}.kpi_customer_ltv
    GROUP BY channel, currency
) AS l
FULL OUTER JOIN
(
    SELECT channel, currency, sum(spend_minor) AS s_spend
    FROM {database}.kpi_ad_spend_daily
    GROUP BY channel, currency
) AS s USING (channel, currency);
