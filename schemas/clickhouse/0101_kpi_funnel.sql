-- KPI: funnel conversion view -> cart -> checkout -> paid -> delivered.
--
-- A funnel entry is a person's first `Product Viewed` of a UTC day within one
-- (channel, campaign) of that view event. From the entry, the ordered steps Product
-- Added, Checkout Started, paid (order.paid) and delivered (shipment.delivered) count
-- when they follow in that order within 14 days of the entry (windowFunnel).

CREATE VIEW IF NOT EXISTS {database}.kpi_funnel_daily AS
SELECT
    day,
    channel,
    campaign,
    count() AS viewed,
    countIf(level >= 2) AS added_to_cart,
    countIf(level >= 3) AS checked_out,
    countIf(level >= 4) AS paid,
    countIf(level >= 5) AS delivered,
    added_to_cart / viewed AS view_to_cart_rate,
    if(added_to_cart > 0, checked_out / added_to_cart, NULL) AS cart_to_checkout_rate,
    if(checked_out > 0, paid / checked_out, NULL) AS checkout_to_paid_rate,
    if(paid > 0, delivered / paid, NULL) AS paid_to_delivered_rate,
    paid / viewed AS view_to_paid_rate
FROM
(
    SELECT
        person_key,
        day,
        channel,
        campaign,
        windowFunnel(1209600)(s_time, s_step = 1 AND s_time = entry_time, s_step = 2,
                              s_step = 3, s_step = 4, s_step = 5) AS level
    FROM
    (
        SELECT person_key, toDate(step_time) AS day, channel, campaign,
               min(step_time) AS entry_time
        FROM {database}.kpi_funnel_steps
        WHERE step = 1
        GROUP BY person_key, day, channel, campaign
    ) AS en
    ALL INNER JOIN
    (
        SELECT person_key, step AS s_step, step_time AS s_time
        FROM {database}.kpi_funnel_steps
    ) AS st USING person_key
    GROUP BY person_key, day, channel, campaign
) AS f
GROUP BY day, channel, campaign;

-- The same funnel by experiment variant: an entry is a person's first exposure to the
-- experiment (kpi_experiment_exposures), day is the UTC day of that exposure, and the
-- steps view, cart, checkout, paid, delivered count when they follow the exposure in that
-- order within 14 days.
CREATE VIEW IF NOT EXISTS {database}.kpi_funnel_variant AS
SELECT
    day,
    experiment_id,
    variant,
    count() AS exposed,
    countIf(level >= 2) AS viewed,
    countIf(level >= 3) AS added_to_cart,
    countIf(level >= 4) AS checked_out,
    countIf(level >= 5) AS paid,
    countIf(level >= 6) AS delivered,
    viewed / exposed AS exposed_to_view_rate,
    if(viewed > 0, added_to_cart / viewed, NULL) AS view_to_cart_rate,
    if(added_to_cart > 0, checked_out / added_to_cart, NULL) AS cart_to_checkout_rate,
    if(checked_out > 0, paid / checked_out, NULL) AS checkout_to_paid_rate,
    if(paid > 0, delivered / paid, NULL) AS paid_to_delivered_rate,
    paid / exposed AS exposed_to_paid_rate
FROM
(
    SELECT
        person_key,
        experiment_id,
        variant,
        toDate(exposed_at) AS day,
        windowFunnel(1209600)(s_time, s_step = 0, s_step = 1, s_step = 2, s_step = 3,
                              s_step = 4, s_step = 5) AS level
    FROM
    (
        SELECT person_key, experiment_id, variant, exposed_at, s_step, s_time
        FROM
        (
            SELECT person_key, experiment_id, variant, exposed_at
            FROM {database}.kpi_experiment_exposures
        ) AS ex
        ALL INNER JOIN
        (
            SELECT person_key, step AS s_step, step_time AS s_time
            FROM {database}.kpi_funnel_steps
        ) AS st USING person_key
        UNION ALL
        SELECT person_key, experiment_id, variant, exposed_at, toUInt8(0) AS s_step,
               exposed_at AS s_time
        FROM {database}.kpi_experiment_exposures
    ) AS es
    GROUP BY person_key, experiment_id, variant, day
) AS f
GROUP BY day, experiment_id, variant;
