-- KPIs of customer service (kpi_ticket_facts, 0100):
--  - CSAT: average of the latest 1-5 rating of each rated ticket (target 4.5) and the
--    share of ratings >= 4; by the UTC day of the rating;
--  - first response time of after-sales tickets and the share answered within the
--    2-hour SLA (at most 7 200 000 ms after opening); by the UTC day the ticket opened.
--    A ticket still unanswered more than 2 hours before the newest ticket event counts as
--    a breach (overdue_unanswered), so sla_share = within_sla / (responded + overdue);
--  - complaint rate: tickets that became formal complaints / paid orders, by UTC day
--    (complaints on the day of the complaint, orders on the day they were paid).

CREATE VIEW IF NOT EXISTS {database}.kpi_csat_daily AS
SELECT
    day,
    count() AS rated_tickets,
    sum(c_score) AS score_sum,
    score_sum / rated_tickets AS csat_avg,
    countIf(c_score >= 4) AS satisfied,
    satisfied / rated_tickets AS satisfied_share
FROM
(
    SELECT assumeNotNull(rated_date) AS day, toInt64(assumeNotNull(csat_score)) AS c_score
    FROM {database}.kpi_ticket_facts
    WHERE rated = 1
) AS c
GROUP BY day;

CREATE VIEW IF NOT EXISTS {database}.kpi_csat AS
SELECT
    rated_tickets,
    score_sum,
    if(rated_tickets > 0, score_sum / rated_tickets, NULL) AS csat_avg,
    satisfied,
    if(rated_tickets > 0, satisfied / rated_tickets, NULL) AS satisfied_share,
    4.5 AS target,
    if(rated_tickets > 0, toUInt8(score_sum / rated_tickets >= 4.5), NULL) AS meets_target
FROM
(
    SELECT sum(d_rated) AS rated_tickets, sum(d_score) AS score_sum,
           sum(d_satisfied) AS satisfied
    FROM
    (
        SELECT rated_tickets AS d_rated, score_sum AS d_score, satisfied AS d_satisfied
        FROM {database}.kpi_csat_daily
    ) AS d
) AS c;

CREATE VIEW IF NOT EXISTS {database}.kpi_first_response_daily AS
SELECT
    day,
    count() AS tickets,
    sum(f_responded) AS responded,
    sum(f_within) AS within_sla,
    sum(f_overdue) AS overdue_unanswered,
    if(responded + overdue_unanswered > 0,
       within_sla / (responded + overdue_unanswered), NULL) AS sla_share,
    sum(f_minutes) AS response_minutes_sum,
    if(responded > 0, response_minutes_sum / responded, NULL) AS avg_response_minutes,
    if(responded > 0, quantileExactIf(0.5)(f_minutes, f_responded = 1), NULL)
        AS median_response_minutes
FROM
(
    SELECT
        opened_date AS day,
        responded AS f_responded,
        within_sla AS f_within,
        toUInt8(responded = 0 AND opened_at_ms + 7200000
                < (SELECT max(event_time_ms) FROM {database}.tickets)) AS f_overdue,
        ifNull(response_minutes, 0) AS f_minutes
    FROM {database}.kpi_ticket_facts
) AS f
GROUP BY day;

CREATE VIEW IF NOT EXISTS {database}.kpi_first_response AS
SELECT
    count() AS tickets,
    sum(f_responded) AS responded,
    sum(f_within) AS within_sla,
    sum(f_overdue) AS overdue_unanswered,
    if(responded + overdue_unanswered > 0,
       within_sla / (responded + overdue_unanswered), NULL) AS sla_share,
    if(responded > 0, sum(f_minutes) / responded, NULL) AS avg_response_minutes,
    if(responded > 0, quantileExactIf(0.5)(f_minutes, f_responded = 1), NULL)
        AS median_response_minutes,
    7200000 / 60000 AS sla_minutes
FROM
(
    SELECT
        responded AS f_responded,
        within_sla AS f_within,
        toUInt8(responded = 0 AND opened_at_ms + 7200000
                < (SELECT max(event_time_ms) FROM {database}.tickets)) AS f_overdue,
        ifNull(response_minutes, 0) AS f_minutes
    FROM {database}.kpi_ticket_facts
) AS f;

CREATE VIEW IF NOT EXISTS {database}.kpi_complaint_rate_daily AS
SELECT
    day,
    sum(c_complaints) AS complaints,
    sum(c_orders) AS paid_orders,
    if(paid_orders > 0, complaints / paid_orders, NULL) AS complaint_rate
FROM
(
    SELECT assumeNotNull(complaint_date) AS day, toUInt64(1) AS c_complaints,
           toUInt64(0) AS c_orders
    FROM {database}.kpi_ticket_facts
    WHERE is_complaint = 1
    UNION ALL
    SELECT paid_date AS day, toUInt64(0) AS c_complaints, toUInt64(1) AS c_orders
    FROM {database}.kpi_order_facts
) AS c
GROUP BY day;

CREATE VIEW IF NOT EXISTS {database}.kpi_complaint_rate AS
SELECT
    sum(d_complaints) AS complaints,
    sum(d_orders) AS paid_orders,
    if(paid_orders > 0, complaints / paid_orders, NULL) AS complaint_rate
FROM
(
    SELECT complaints AS d_complaints, paid_orders AS d_orders
    FROM {database}.kpi_complaint_rate_daily
) AS d;
