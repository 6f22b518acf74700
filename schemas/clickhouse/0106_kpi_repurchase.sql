-- KPI: repurchase rate = buyers with at least two paid orders / buyers with at least one
-- (target 45 %). A buyer is a person key (person_id once identity resolution lands).

CREATE VIEW IF NOT EXISTS {database}.kpi_repurchase_rate AS
SELECT
    buyers,
    repeat_buyers,
    if(buyers > 0, repeat_buyers / buyers, NULL) AS repurchase_rate,
    0.45 AS target,
    if(buyers > 0, toUInt8(repeat_buyers / buyers >= 0.45), NULL) AS meets_target
FROM
(
    SELECT count() AS buyers, countIf(b_orders >= 2) AS repeat_buyers
    FROM
    (
        SELECT person_key, count() AS b_orders
        FROM {database}.kpi_order_facts
        GROUP BY person_key
    ) AS b
) AS r;
