-- KPI query layer, part 1: building blocks shared by the KPI views (docs/bi.md).
--
-- Every view here and in 0101_* … runs on ClickHouse 18.16 and on current releases:
-- at most one JOIN per SELECT (nest subqueries for more), every joined subquery has an
-- alias, UNION ALL branches have identical column types, no window functions, no
-- range(a, b) (only range(n)), and no column alias equal to a column it aggregates.
--
-- The person key of every KPI that counts people:
--   person_id        once identity resolution fills it (the switch is automatic),
--   crm_customer_id  until then,
--   user_id, then anonymous_id where a table has them.
-- All times are UTC; days, weeks (Mondays) and months are UTC calendar buckets.

-- One row per order that was paid: the paid event's amounts and context, plus the refunds
-- of the order summed over its order.refunded events (partial refunds add up).
CREATE VIEW IF NOT EXISTS {database}.kpi_order_facts AS
SELECT
    order_id,
    argMinIf(o_person_key, event_time_ms, o_paid) AS person_key,
    argMinIf(o_customer_id, event_time_ms, o_paid) AS crm_customer_id,
    argMinIf(o_currency, event_time_ms, o_paid) AS currency,
    minIf(event_time_ms, o_paid) AS paid_at_ms,
    toDateTime(intDiv(paid_at_ms, 1000), 'UTC') AS paid_at,
    toDate(paid_at) AS paid_date,
    argMinIf(o_subtotal, event_time_ms, o_paid) AS subtotal_minor,
    argMinIf(o_discount, event_time_ms, o_paid) AS discount_minor,
    argMinIf(o_shipping, event_time_ms, o_paid) AS shipping_minor,
    argMinIf(o_total, event_time_ms, o_paid) AS total_minor,
    sumIf(o_refund, o_refunded) AS refunded_minor,
    total_minor - refunded_minor AS net_minor,
    countIf(o_refunded) AS refund_events,
    argMinIf(o_channel, event_time_ms, o_paid) AS channel,
    argMinIf(o_campaign, event_time_ms, o_paid) AS campaign,
    argMinIf(o_private_domain, event_time_ms, o_paid) AS private_domain
FROM
(
    SELECT
        order_id,
        event_time_ms,
        multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id,
                user_id != '', user_id, anonymous_id) AS o_person_key,
        crm_customer_id AS o_customer_id,
        currency AS o_currency,
        subtotal_minor AS o_subtotal,
        discount_minor AS o_discount,
        shipping_minor AS o_shipping,
        total_minor AS o_total,
        refund_minor AS o_refund,
        channel AS o_channel,
        campaign AS o_campaign,
        private_domain AS o_private_domain,
        event_type = 'order.paid' AS o_paid,
        event_type = 'order.refunded' AS o_refunded
    FROM {database}.orders
    WHERE event_type IN ('order.paid', 'order.refunded')
) AS o
GROUP BY order_id
HAVING countIf(o_paid) > 0;

-- Money movements in time: +total when an order is paid, -refund when it is refunded
-- (at the refund's own time). Net revenue over any period is sum(amount_minor).
CREATE VIEW IF NOT EXISTS {database}.kpi_revenue_events AS
SELECT order_id, person_key, currency, 'paid' AS kind, paid_at_ms AS event_time_ms,
       toDate(toDateTime(intDiv(paid_at_ms, 1000), 'UTC')) AS event_date,
       total_minor AS amount_minor
FROM {database}.kpi_order_facts
UNION ALL
SELECT order_id, person_key, currency, 'refund' AS kind, r_time_ms AS event_time_ms,
       toDate(toDateTime(intDiv(r_time_ms, 1000), 'UTC')) AS event_date,
       -r_refund AS amount_minor
FROM
(
    SELECT order_id, event_time_ms AS r_time_ms, refund_minor AS r_refund
    FROM {database}.orders
    WHERE event_type = 'order.refunded'
) AS r
ALL INNER JOIN
(
    SELECT order_id, person_key, currency FROM {database}.kpi_order_facts
) AS f USING order_id;

-- One row per buyer (person key) and currency: orders, gross paid, refunds, net value
-- (LTV net of refunds), first and last paid order and the acquisition channel: the
-- channel of the first paid order, else the CRM registration channel, else 'unknown'.
CREATE VIEW IF NOT EXISTS {database}.kpi_customer_ltv AS
SELECT
    person_key,
    currency,
    customer_id AS crm_customer_id,
    first_paid_at_ms,
    toDateTime(intDiv(first_paid_at_ms, 1000), 'UTC') AS first_paid_at,
    toDate(toDateTime(intDiv(first_paid_at_ms, 1000), 'UTC')) AS first_paid_date,
    last_paid_at_ms,
    toDate(toDateTime(intDiv(last_paid_at_ms, 1000), 'UTC')) AS last_paid_date,
    paid_orders,
    gross_minor,
    refunds_minor AS refunded_minor,
    gross_minor - refunds_minor AS net_minor,
    multiIf(first_order_channel != '', first_order_channel,
            registration_channel != '', registration_channel, 'unknown') AS acquisition_channel,
    first_order_campaign AS acquisition_campaign
FROM
(
    SELECT
        person_key,
        currency,
        argMin(crm_customer_id, paid_at_ms) AS customer_id,
        min(paid_at_ms) AS first_paid_at_ms,
        max(paid_at_ms) AS last_paid_at_ms,
        count() AS paid_orders,
        sum(total_minor) AS gross_minor,
        sum(refunded_minor) AS refunds_minor,
        argMin(channel, paid_at_ms) AS first_order_channel,
        argMin(campaign, paid_at_ms) AS first_order_campaign
    FROM {database}.kpi_order_facts
    GROUP BY person_key, currency
) AS c
ALL LEFT JOIN
(
    SELECT
        customer_id,
        argMaxIf(c_registration_channel, event_time_ms, c_registration_channel != '')
            AS registration_channel
    FROM
    (
        SELECT customer_id, event_time_ms,
               if(registration_channel != '', registration_channel,
                  if(event_type = 'customer.registered', channel, '')) AS c_registration_channel
        FROM {database}.customers
    ) AS cr
    GROUP BY customer_id
) AS r USING customer_id;

-- Ad spend per day, channel, campaign and currency; a restated day counts once, with
-- the latest report (highest received_at_ms).
CREATE VIEW IF NOT EXISTS {database}.kpi_ad_spend_daily AS
SELECT
    day,
    channel,
    campaign_id,
    currency,
    argMax(a_campaign_name, received_at_ms) AS campaign_name,
    argMax(a_spend, received_at_ms) AS spend_minor,
    argMax(a_impressions, received_at_ms) AS impressions,
    argMax(a_clicks, received_at_ms) AS clicks,
    count() AS reports
FROM
(
    SELECT day, channel, campaign_id, currency, received_at_ms,
           campaign_name AS a_campaign_name, spend_minor AS a_spend,
           impressions AS a_impressions, clicks AS a_clicks
    FROM {database}.ad_spend
) AS a
GROUP BY day, channel, campaign_id, currency;

-- One row per waybill: carrier, order, when it was created, dispatched and delivered,
-- exceptions, the promise and whether it was kept. Delivery time runs from dispatch
-- (or creation when no dispatch event arrived) to the first delivery.
CREATE VIEW IF NOT EXISTS {database}.kpi_shipment_facts AS
SELECT
    waybill_no,
    order_id,
    carrier,
    created_at_ms,
    dispatched_at_ms,
    start_at_ms,
    toDate(toDateTime(intDiv(start_at_ms, 1000), 'UTC')) AS ship_date,
    delivered,
    delivered_at_ms,
    if(delivered = 1, (delivered_at_ms - start_at_ms) / 3600000, NULL) AS delivery_hours,
    exception_events,
    exception_events > 0 AS has_exception,
    returned,
    promised_at_ms,
    if(delivered = 1 AND isNotNull(promised_at_ms),
       toUInt8(delivered_at_ms <= assumeNotNull(promised_at_ms)), NULL) AS on_time
FROM
(
    SELECT
        waybill_no,
        anyIf(s_order_id, s_order_id != '') AS order_id,
        anyIf(s_carrier, s_carrier != '') AS carrier,
        minIf(event_time_ms, event_type = 'shipment.created') AS created_at_ms,
        minIf(event_time_ms, event_type = 'shipment.dispatched') AS dispatched_at_ms,
        multiIf(dispatched_at_ms > 0, dispatched_at_ms, created_at_ms > 0, created_at_ms,
                min(event_time_ms)) AS start_at_ms,
        toUInt8(countIf(event_type = 'shipment.delivered') > 0) AS delivered,
        minIf(event_time_ms, event_type = 'shipment.delivered') AS delivered_at_ms,
        countIf(event_type = 'shipment.exception') AS exception_events,
        toUInt8(countIf(event_type = 'shipment.returned') > 0) AS returned,
        max(s_promised_at_ms) AS promised_at_ms
    FROM
    (
        SELECT waybill_no, event_type, event_time_ms, order_id AS s_order_id,
               carrier AS s_carrier, promised_at_ms AS s_promised_at_ms
        FROM {database}.shipments
    ) AS s
    GROUP BY waybill_no
) AS w;

-- One row per service ticket: who, when it was opened and first answered, the latest
-- satisfaction rating, and whether it became a formal complaint. Times come from the
-- payload (opened_at_ms, first_response_at_ms) and else from the event that states them.
CREATE VIEW IF NOT EXISTS {database}.kpi_ticket_facts AS
SELECT
    ticket_id,
    person_key,
    category,
    service_channel,
    opened_at_ms,
    toDate(toDateTime(intDiv(opened_at_ms, 1000), 'UTC')) AS opened_date,
    responded,
    if(responded = 1, first_response_ms, NULL) AS first_response_at_ms,
    if(responded = 1, (first_response_ms - opened_at_ms) / 60000, NULL) AS response_minutes,
    toUInt8(responded = 1 AND first_response_ms - opened_at_ms <= 7200000) AS within_sla,
    rated,
    if(rated = 1, csat_latest, NULL) AS csat_score,
    if(rated = 1, rated_ms, NULL) AS rated_at_ms,
    if(rated = 1, toDate(toDateTime(intDiv(rated_ms, 1000), 'UTC')), NULL) AS rated_date,
    is_complaint,
    if(is_complaint = 1, complaint_ms, NULL) AS complaint_at_ms,
    if(is_complaint = 1, toDate(toDateTime(intDiv(complaint_ms, 1000), 'UTC')), NULL) AS complaint_date
FROM
(
    SELECT
        ticket_id,
        anyIf(t_person_key, t_person_key != '') AS person_key,
        anyIf(t_category, t_category != '') AS category,
        anyIf(t_service_channel, t_service_channel != '') AS service_channel,
        if(countIf(t_open_ms > 0) > 0, minIf(t_open_ms, t_open_ms > 0), min(event_time_ms))
            AS opened_at_ms,
        toUInt8(countIf(t_first_response_ms > 0) > 0) AS responded,
        minIf(t_first_response_ms, t_first_response_ms > 0) AS first_response_ms,
        toUInt8(countIf(t_rated) > 0) AS rated,
        argMaxIf(t_csat, event_time_ms, t_rated) AS csat_latest,
        maxIf(event_time_ms, t_rated) AS rated_ms,
        toUInt8(countIf(t_complaint) > 0) AS is_complaint,
        minIf(event_time_ms, t_complaint) AS complaint_ms
    FROM
    (
        SELECT
            ticket_id,
            event_time_ms,
            multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id, user_id)
                AS t_person_key,
            category AS t_category,
            service_channel AS t_service_channel,
            ifNull(opened_at_ms, if(event_type = 'ticket.opened', event_time_ms, toInt64(0)))
                AS t_open_ms,
            ifNull(first_response_at_ms,
                   if(event_type = 'ticket.first_response', event_time_ms, toInt64(0)))
                AS t_first_response_ms,
            isNotNull(csat_score) AS t_rated,
            toInt32(ifNull(csat_score, 0)) AS t_csat,
            is_complaint = 1 OR event_type = 'complaint.filed' AS t_complaint
        FROM {database}.tickets
    ) AS t
    GROUP BY ticket_id
) AS tf;

-- Funnel steps of every person: 1 Product Viewed, 2 Product Added, 3 Checkout Started
-- (tracking), 4 paid (ERP order.paid), 5 delivered (first delivery of the order's
-- waybills; the person is the order's). channel and campaign are the step event's own.
CREATE VIEW IF NOT EXISTS {database}.kpi_funnel_steps AS
SELECT
    multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id,
            user_id != '', user_id, anonymous_id) AS person_key,
    toUInt8(multiIf(event_name = 'Product Viewed', 1, event_name = 'Product Added', 2, 3)) AS step,
    toDateTime(intDiv(event_time_ms, 1000), 'UTC') AS step_time,
    channel,
    campaign
FROM {database}.events
WHERE source = 'tracking' AND event_type = 'track'
  AND event_name IN ('Product Viewed', 'Product Added', 'Checkout Started')
UNION ALL
SELECT person_key, toUInt8(4) AS step, toDateTime(intDiv(paid_at_ms, 1000), 'UTC') AS step_time,
       channel, campaign
FROM {database}.kpi_order_facts
UNION ALL
SELECT person_key, toUInt8(5) AS step, toDateTime(intDiv(d_at_ms, 1000), 'UTC') AS step_time,
       channel, campaign
FROM
(
    SELECT order_id, min(delivered_at_ms) AS d_at_ms
    FROM {database}.kpi_shipment_facts
    WHERE delivered = 1 AND order_id != ''
    GROUP BY order_id
) AS d
ALL INNER JOIN
(
    SELECT order_id, person_key, channel, campaign FROM {database}.kpi_order_facts
) AS f USING order_id;

-- Experiment exposures: the first tracking event of a person that carries an assignment
-- (context.experiments, which ingest also fills from `Experiment Viewed`). variant is the
-- first variant seen; variants_seen > 1 flags a person seen in several variants.
CREATE VIEW IF NOT EXISTS {database}.kpi_experiment_exposures AS
SELECT
    e_person_key AS person_key,
    e_experiment_id AS experiment_id,
    argMin(e_variant, e_time_ms) AS variant,
    uniqExact(e_variant) AS variants_seen,
    min(e_time_ms) AS exposed_at_ms,
    toDateTime(intDiv(exposed_at_ms, 1000), 'UTC') AS exposed_at
FROM
(
    SELECT
        multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id,
                user_id != '', user_id, anonymous_id) AS e_person_key,
        event_time_ms AS e_time_ms,
        e_experiment_id,
        e_variant
    FROM {database}.events
    ARRAY JOIN experiment_ids AS e_experiment_id, experiment_variants AS e_variant
    WHERE source = 'tracking'
) AS x
GROUP BY e_person_key, e_experiment_id;

-- Weekly activity (Mondays, UTC): a person is active in a week with a tracking call
-- (track, page, screen) or an order created or paid.
CREATE VIEW IF NOT EXISTS {database}.kpi_weekly_activity AS
SELECT person_key, week
FROM
(
    SELECT
        multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id,
                user_id != '', user_id, anonymous_id) AS person_key,
        toMonday(toDate(toDateTime(intDiv(event_time_ms, 1000), 'UTC'))) AS week
    FROM {database}.events
    WHERE source = 'tracking' AND event_type IN ('track', 'page', 'screen')
    UNION ALL
    SELECT
        multiIf(person_id != '', person_id, crm_customer_id != '', crm_customer_id,
                user_id != '', user_id, anonymous_id) AS person_key,
        toMonday(toDate(toDateTime(intDiv(event_time_ms, 1000), 'UTC'))) AS week
    FROM {database}.orders
    WHERE event_type IN ('order.created', 'order.paid')
) AS a
WHERE person_key != ''
GROUP BY person_key, week;
