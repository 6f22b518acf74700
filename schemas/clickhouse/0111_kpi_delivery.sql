-- KPI: delivery time and shipment exception rate (kpi_shipment_facts, 0100).
--
-- Per waybill, delivery time runs from dispatch (or creation) to the first delivery, in
-- hours. exception_rate = waybills with at least one shipment.exception / waybills.
-- on_time_share = waybills delivered no later than promised / delivered waybills with a
-- promise. By UTC ship day (day of dispatch, else creation) and carrier, and by carrier.

CREATE VIEW IF NOT EXISTS {database}.kpi_delivery_daily AS
SELECT
    day,
    carrier,
    count() AS shipments,
    sum(d_delivered) AS delivered,
    sum(d_hours) AS delivery_hours_sum,
    if(delivered > 0, delivery_hours_sum / delivered, NULL) AS avg_delivery_hours,
    sum(d_exception) AS with_exception,
    with_exception / shipments AS exception_rate,
    sum(d_promised) AS delivered_with_promise,
    sum(d_on_time) AS on_time,
    if(delivered_with_promise > 0, on_time / delivered_with_promise, NULL) AS on_time_share
FROM
(
    SELECT ship_date AS day, carrier, delivered AS d_delivered,
           ifNull(delivery_hours, 0) AS d_hours, has_exception AS d_exception,
           toUInt8(isNotNull(on_time)) AS d_promised, ifNull(on_time, 0) AS d_on_time
    FROM {database}.kpi_shipment_facts
) AS d
GROUP BY day, carrier;

CREATE VIEW IF NOT EXISTS {database}.kpi_delivery AS
SELECT
    carrier,
    sum(shipments) AS shipments,
    sum(d_delivered) AS delivered,
    if(delivered > 0, sum(d_hours) / delivered, NULL) AS avg_delivery_hours,
    sum(d_exception) AS with_exception,
    with_exception / shipments AS exception_rate,
    sum(d_promised) AS delivered_with_promise,
    sum(d_on_time) AS on_time,
    if(delivered_with_promise > 0, on_time / delivered_with_promise, NULL) AS on_time_share
FROM
(
    SELECT carrier, shipments, delivered AS d_delivered, delivery_hours_sum AS d_hours,
           with_exception AS d_exception, delivered_with_promise AS d_promised,
           on_time AS d_on_time
    FROM {database}.kpi_delivery_daily
) AS d
GROUP BY carrier;
