-- KPI: RFM segments and the list of high-value customers.
--
-- Per buyer and currency (kpi_customer_ltv): recency = days from the last paid order to
-- the reference day (the latest day with a paid order in the data), frequency = paid
-- orders, monetary = net value (paid minus refunds). Each is "high" when better than the
-- average of all buyers in the currency (recency below, frequency and monetary above).
-- The eight segments are the usual RFM model of Chinese e-commerce:
--   R F M  segment                 segment_zh
--   + + +  important_value         重要价值客户   (the high-value customers)
--   + - +  important_development   重要发展客户
--   - + +  important_retention     重要保持客户
--   - - +  important_winback       重要挽留客户
--   + + -  general_value           一般价值客户
--   + - -  general_development     一般发展客户
--   - + -  general_retention       一般保持客户
--   - - -  general_winback         一般挽留客户

CREATE VIEW IF NOT EXISTS {database}.kpi_rfm AS
SELECT
    person_key,
    currency,
    crm_customer_id,
    last_paid_date,
    reference_date,
    recency_days,
    frequency,
    monetary_minor,
    avg_recency_days,
    avg_frequency,
    avg_monetary_minor,
    toUInt8(recency_days < avg_recency_days) AS r_high,
    toUInt8(frequency > avg_frequency) AS f_high,
    toUInt8(monetary_minor > avg_monetary_minor) AS m_high,
    r_high * 4 + f_high * 2 + m_high AS rfm_code,
    transform(rfm_code, [7, 5, 3, 1, 6, 4, 2, 0],
              ['important_value', 'important_development', 'important_retention',
               'important_winback', 'general_value', 'general_development',
               'general_retention', 'general_winback'], '') AS segment,
    transform(rfm_code, [7, 5, 3, 1, 6, 4, 2, 0],
              ['重要价值客户', '重要发展客户', '重要保持客户', '重要挽留客户',
               '一般价值客户', '一般发展客户', '一般保持客户', '一般挽留客户'], '') AS segment_zh
FROM
(
    SELECT
        person_key,
        currency,
        crm_customer_id,
        last_paid_date,
        (SELECT max(paid_date) FROM {database}.kpi_order_facts) AS reference_date,
        toInt64(reference_date - last_paid_date) AS recency_days,
        paid_orders AS frequency,
        net_minor AS monetary_minor
    FROM {database}.kpi_customer_ltv
) AS c
ALL INNER JOIN
(
    SELECT
        currency,
        avg(toInt64((SELECT max(paid_date) FROM {database}.kpi_order_facts) - last_paid_date))
            AS avg_recency_days,
        avg(paid_orders) AS avg_frequency,
        avg(net_minor) AS avg_monetary_minor
    FROM {database}.kpi_customer_ltv
    GROUP BY currency
) AS a USING currency;

CREATE VIEW IF NOT EXISTS {database}.kpi_rfm_segments AS
SELECT
    segment,
    segment_zh,
    currency,
    count() AS customers,
    sum(s_monetary) AS monetary_minor,
    avg(s_recency) AS avg_recency_days,
    avg(s_frequency) AS avg_frequency,
    monetary_minor / customers AS avg_monetary_minor
FROM
(
    SELECT segment, segment_zh, currency, monetary_minor AS s_monetary,
           recency_days AS s_recency, frequency AS s_frequency
    FROM {database}.kpi_rfm
) AS r
GROUP BY segment, segment_zh, currency;

CREATE VIEW IF NOT EXISTS {database}.kpi_high_value_customers AS
SELECT
    person_key,
    crm_customer_id,
    currency,
    monetary_minor,
    frequency,
    recency_days,
    last_paid_date
FROM {database}.kpi_rfm
WHERE segment = 'important_value'
ORDER BY currency, monetary_minor DESC, person_key;
