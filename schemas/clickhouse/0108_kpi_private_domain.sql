-- KPI: private-domain traffic share (target 80 %).
--
-- Traffic is tracking calls of kind track, page and screen (not identify, alias, group).
-- private_domain_share = calls with context.private_domain / all calls (page-view based);
-- private_visitor_share = visitors with at least one private-domain call / all visitors
-- (visitor = person key). By UTC day, and over all time.

CREATE VIEW IF NOT EXISTS {database}.kpi_private_domain_daily AS
SELECT
    day,
    count() AS events,
    countIf(p_private = 1) AS private_events,
    private_events / events AS private_domain_share,
    uniqExact(p_person_key) AS visitors,
    uniqExactIf(p_person_key, p_private = 1) AS private_visitors,
    private_visitors / visitors AS private_visitor_share,
    0.8 AS target
FROM
(
    SELECT
        toDate(toDateTime(intDiv(event_time_ms, 1000), 'UTC')) AS day,
        private_domain AS p_private,
        multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id,
                user_id != '', user_id, anonymous_id) AS p_person_key
    FROM {database}.events
    WHERE source = 'tracking' AND event_type IN ('track', 'page', 'screen')
) AS p
GROUP BY day;

CREATE VIEW IF NOT EXISTS {database}.kpi_private_domain_share AS
SELECT
    count() AS events,
    countIf(p_private = 1) AS private_events,
    if(events > 0, private_events / events, NULL) AS private_domain_share,
    uniqExact(p_person_key) AS visitors,
    uniqExactIf(p_person_key, p_private = 1) AS private_visitors,
    if(visitors > 0, private_visitors / visitors, NULL) AS private_visitor_share,
    0.8 AS target,
    if(events > 0, toUInt8(private_events / events >= 0.8), NULL) AS meets_target
FROM
(
    SELECT
        private_domain AS p_private,
        multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id,
                user_id != '', user_id, anonymous_id) AS p_person_key
    FROM {database}.events
    WHERE source = 'tracking' AND event_type IN ('track', 'page', 'screen')
) AS p;
