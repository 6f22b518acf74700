-- KPI: customer acquisition cost per channel = ad spend / newly acquired customers.
--
-- A newly acquired customer is a person whose first paid order falls in the period; the
-- channel is the person's acquisition channel (kpi_customer_ltv: the first paid order's
-- channel, else the CRM registration channel). Spend is the latest report per day
-- (kpi_ad_spend_daily). cac_minor is NULL when the channel had no spend or no new
-- customer in the period.

CREATE VIEW IF NOT EXISTS {database}.kpi_cac_monthly AS
SELECT
    month,
    channel,
    currency,
    s_spend AS spend_minor,
    n_new AS new_customers,
    if(s_spend > 0 AND n_new > 0, s_spend / n_new, NULL) AS cac_minor
FROM
(
    SELECT toStartOfMonth(day) AS month, channel, currency, sum(spend_minor) AS s_spend
    FROM {database}.kpi_ad_spend_daily
    GROUP BY month, channel, currency
) AS s
FULL OUTER JOIN
(
    SELECT toStartOfMonth(first_paid_date) AS month, acquisition_channel AS channel,
           uniqExact(person_key) AS n_new
    FROM {database}.kpi_customer_ltv
    GROUP BY month, channel
) AS n USING (month, channel);

CREATE VIEW IF NOT EXISTS {database}.kpi_cac AS
SELECT
    channel,
    currency,
    s_spend AS spend_minor,
    n_new AS new_customers,
    if(s_spend > 0 AND n_new > 0, s_spend / n_new, NULL) AS cac_minor
FROM
(
    SELECT channel, currency, sum(spend_minor) AS s_spend
    FROM {database}.kpi_ad_spend_daily
    GROUP BY channel, currency
) AS s
FULL OUTER JOIN
(
    SELECT acquisition_channel AS channel, uniqExact(person_key) AS n_new
    FROM {database}.kpi_customer_ltv
    GROUP BY channel
) AS n USING (channel);
