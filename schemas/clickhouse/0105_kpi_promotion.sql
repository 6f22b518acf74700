-- KPIs: promotion ROI per campaign, and promotion spend as a share of revenue
-- (target <= 15 %).
--
-- Promotion cost of a campaign = the discounts (line, coupon and order discounts) on its
-- paid orders + its ad spend (ad_spend.campaign_id matched to the orders' context
-- campaign). Attributed net revenue = the paid totals of the campaign's orders minus
-- their refunds. roi = (net revenue - cost) / cost; revenue_per_cost = net revenue / cost
-- (what e-commerce teams often call ROI/ROAS).
--
-- Promotion spend share = (discounts on paid orders + ad spend) / net revenue (paid
-- totals minus refunds, each in the month it happened); discount_share uses discounts
-- alone. Orders are counted in the month they were paid.

CREATE VIEW IF NOT EXISTS {database}.kpi_promotion_roi AS
SELECT
    campaign,
    currency,
    if(a_channel != '', a_channel, o_channel) AS channel,
    o_orders AS orders,
    o_gross AS gross_revenue_minor,
    o_refunded AS refunded_minor,
    o_gross - o_refunded AS net_revenue_minor,
    o_discount AS discount_minor,
    a_spend AS ad_spend_minor,
    o_discount + a_spend AS promotion_cost_minor,
    if(o_discount + a_spend > 0,
       (o_gross - o_refunded - o_discount - a_spend) / (o_discount + a_spend), NULL) AS roi,
    if(o_discount + a_spend > 0,
       (o_gross - o_refunded) / (o_discount + a_spend), NULL) AS revenue_per_cost
FROM
(
    SELECT campaign, currency, any(channel) AS o_channel, count() AS o_orders,
           sum(total_minor) AS o_gross, sum(refunded_minor) AS o_refunded,
           sum(discount_minor) AS o_discount
    FROM {database}.kpi_order_facts
    WHERE campaign != ''
    GROUP BY campaign, currency
) AS o
FULL OUTER JOIN
(
    SELECT campaign_id AS campaign, currency, any(channel) AS a_channel,
           sum(spend_minor) AS a_spend
    FROM {database}.kpi_ad_spend_daily
    GROUP BY campaign, currency
) AS a USING (campaign, currency);

CREATE VIEW IF NOT EXISTS {database}.kpi_promotion_spend_share_monthly AS
SELECT
    month,
    currency,
    sum(p_gross) AS gross_revenue_minor,
    sum(p_refunded) AS refunded_minor,
    gross_revenue_minor - refunded_minor AS net_revenue_minor,
    sum(p_discount) AS discount_minor,
    sum(p_ad_spend) AS ad_spend_minor,
    discount_minor + ad_spend_minor AS promotion_spend_minor,
    if(net_revenue_minor > 0, promotion_spend_minor / net_revenue_minor, NULL)
        AS promotion_spend_share,
    if(net_revenue_minor > 0, discount_minor / net_revenue_minor, NULL) AS discount_share,
    0.15 AS target,
    if(net_revenue_minor > 0, toUInt8(promotion_spend_minor / net_revenue_minor <= 0.15), NULL)
        AS meets_target
FROM
(
    SELECT toStartOfMonth(paid_date) AS month, currency, total_minor AS p_gross,
           toInt64(0) AS p_refunded, discount_minor AS p_discount, toInt64(0) AS p_ad_spend
    FROM {database}.kpi_order_facts
    UNION ALL
    SELECT toStartOfMonth(event_date) AS month, currency, toInt64(0) AS p_gross,
           -amount_minor AS p_refunded, toInt64(0) AS p_discount, toInt64(0) AS p_ad_spend
    FROM {database}.kpi_revenue_events
    WHERE kind = 'refund'
    UNION ALL
    SELECT toStartOfMonth(day) AS month, currency, toInt64(0) AS p_gross,
           toInt64(0) AS p_refunded, toInt64(0) AS p_discount, spend_minor AS p_ad_spend
    FROM {database}.kpi_ad_spend_daily
) AS p
GROUP BY month, currency;

CREATE VIEW IF NOT EXISTS {database}.kpi_promotion_spend_share AS
SELECT
    currency,
    sum(m_gross) AS gross_revenue_minor,
    sum(m_refunded) AS refunded_minor,
    gross_revenue_minor - refunded_minor AS net_revenue_minor,
    sum(m_discount) AS discount_minor,
    sum(m_ad_spend) AS ad_spend_minor,
    discount_minor + ad_spend_minor AS promotion_spend_minor,
    if(net_revenue_minor > 0, promotion_spend_minor / net_revenue_minor, NULL)
        AS promotion_spend_share,
    if(net_revenue_minor > 0, discount_minor / net_revenue_minor, NULL) AS discount_share,
    0.15 AS target,
    if(net_revenue_minor > 0, toUInt8(promotion_spend_minor / net_revenue_minor <= 0.15), NULL)
        AS meets_target
FROM
(
    SELECT currency, gross_revenue_minor AS m_gross, refunded_minor AS m_refunded,
           discount_minor AS m_discount, ad_spend_minor AS m_ad_spend
    FROM {database}.kpi_promotion_spend_share_monthly
) AS m
GROUP BY currency;
