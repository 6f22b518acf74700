-- KPI: customer lifetime value net of refunds, and cohort LTV curves.
--
-- Per-customer values are in kpi_customer_ltv (0100). kpi_ltv sums them per currency;
-- kpi_ltv_cohort gives, for each cohort (UTC month of the first paid order) and each month
-- since, the cumulative net revenue of the cohort (paid totals minus refunds, each at its
-- own time) divided by the cohort's size. Curves run to the latest month with revenue
-- data.

CREATE VIEW IF NOT EXISTS {database}.kpi_ltv AS
SELECT
    currency,
    count() AS customers,
    sum(c_orders) AS paid_orders,
    sum(c_gross) AS gross_minor,
    sum(c_refunded) AS refunded_minor,
    sum(c_net) AS net_minor,
    net_minor / customers AS avg_ltv_minor
FROM
(
    SELECT currency, paid_orders AS c_orders, gross_minor AS c_gross,
           refunded_minor AS c_refunded, net_minor AS c_net
    FROM {database}.kpi_customer_ltv
) AS c
GROUP BY currency;

CREATE VIEW IF NOT EXISTS {database}.kpi_ltv_cohort AS
SELECT
    cohort_month,
    month_offset,
    currency,
    cohort_customers,
    cumulative_net_minor,
    cumulative_net_minor / cohort_customers AS ltv_per_customer_minor
FROM
(
    SELECT cohort_month, currency, month_offset, sum(r_amount) AS cumulative_net_minor
    FROM
    (
        SELECT
            cohort_month,
            currency,
            r_amount,
            arrayJoin(arrayMap(i -> toUInt32(r_offset + i),
                               range(toUInt64(horizon - r_offset + 1)))) AS month_offset
        FROM
        (
            SELECT
                c_cohort AS cohort_month,
                currency,
                r_amount,
                toInt64(toRelativeMonthNum(r_date)) - toInt64(toRelativeMonthNum(c_cohort))
                    AS r_offset,
                toInt64(toRelativeMonthNum(
                    (SELECT max(event_date) FROM {database}.kpi_revenue_events)))
                    - toInt64(toRelativeMonthNum(c_cohort)) AS horizon
            FROM
            (
                SELECT person_key, currency, amount_minor AS r_amount, event_date AS r_date
                FROM {database}.kpi_revenue_events
            ) AS r
            ALL INNER JOIN
            (
                SELECT person_key, currency, toStartOfMonth(first_paid_date) AS c_cohort
                FROM {database}.kpi_customer_ltv
            ) AS c USING (person_key, currency)
        ) AS ro
    ) AS rx
    GROUP BY cohort_month, currency, month_offset
) AS cum
ALL INNER JOIN
(
    SELECT toStartOfMonth(first_paid_date) AS cohort_month, currency,
           count() AS cohort_customers
    FROM {database}.kpi_customer_ltv
    GROUP BY cohort_month, currency
) AS sz USING (cohort_month, currency);
