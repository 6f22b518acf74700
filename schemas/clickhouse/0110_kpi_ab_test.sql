-- KPI: A/B conversion per variant, uplift, confidence and a sample-ratio-mismatch check.
--
-- Exposed: persons with an assignment (kpi_experiment_exposures, first variant seen).
-- Converted: exposed persons with a paid order at or after their first exposure.
-- The control is the variant named 'control', else the alphabetically first variant.
-- Per non-control variant, against the control:
--   uplift_abs = p - p_control, uplift_rel = uplift_abs / p_control;
--   95 % confidence interval of uplift_abs (Wald, unpooled standard error, z = 1.959964);
--   z_score (pooled two-proportion z test), p_value (two-sided, normal CDF via erf) and
--   confidence = 1 - p_value; significant = p_value < 0.05.
-- Sample-ratio mismatch (per experiment, equal allocation assumed): chi-square statistic
-- sum((n_i - N/k)^2 / (N/k)) with k - 1 degrees of freedom, its p-value (exact for 1 and 2
-- degrees of freedom, Wilson-Hilferty approximation above), and srm_mismatch when the
-- p-value is below 0.001.

CREATE VIEW IF NOT EXISTS {database}.kpi_experiment_conversions AS
SELECT
    person_key,
    experiment_id,
    variant,
    exposed_at_ms,
    toUInt8(countIf(p_paid_at_ms >= exposed_at_ms) > 0) AS converted,
    countIf(p_paid_at_ms >= exposed_at_ms) AS orders_after_exposure
FROM
(
    SELECT person_key, experiment_id, variant, exposed_at_ms
    FROM {database}.kpi_experiment_exposures
) AS e
ALL LEFT JOIN
(
    SELECT person_key, paid_at_ms AS p_paid_at_ms FROM {database}.kpi_order_facts
) AS o USING person_key
GROUP BY person_key, experiment_id, variant, exposed_at_ms;

CREATE VIEW IF NOT EXISTS {database}.kpi_ab_test AS
SELECT
    experiment_id,
    variant,
    exposed,
    converted,
    conversion_rate,
    control_variant,
    toUInt8(variant = control_variant) AS is_control,
    control_exposed,
    control_converted,
    control_rate,
    if(variant = control_variant, NULL, conversion_rate - control_rate) AS uplift_abs,
    if(variant = control_variant OR control_rate = 0, NULL,
       (conversion_rate - control_rate) / control_rate) AS uplift_rel,
    if(variant = control_variant, NULL,
       conversion_rate - control_rate - 1.959964 * sqrt(
           conversion_rate * (1 - conversion_rate) / exposed
           + control_rate * (1 - control_rate) / control_exposed)) AS ci_low,
    if(variant = control_variant, NULL,
       conversion_rate - control_rate + 1.959964 * sqrt(
           conversion_rate * (1 - conversion_rate) / exposed
           + control_rate * (1 - control_rate) / control_exposed)) AS ci_high,
    (converted + control_converted) / (exposed + control_exposed) AS pooled_rate,
    if(variant = control_variant OR pooled_rate = 0 OR pooled_rate = 1, NULL,
       (conversion_rate - control_rate)
       / sqrt(pooled_rate * (1 - pooled_rate) * (1 / exposed + 1 / control_exposed)))
        AS z_score,
    if(variant = control_variant OR pooled_rate = 0 OR pooled_rate = 1, NULL,
       1 - erf(abs(conversion_rate - control_rate)
               / sqrt(pooled_rate * (1 - pooled_rate) * (1 / exposed + 1 / control_exposed))
               / sqrt(2))) AS p_value,
    1 - p_value AS confidence,
    toUInt8(p_value < 0.05) AS significant,
    variants,
    total_exposed,
    srm_chi2,
    srm_df,
    srm_p_value,
    toUInt8(srm_p_value < 0.001) AS srm_mismatch
FROM
(
    SELECT experiment_id, variant, count() AS exposed, sum(v_converted) AS converted,
           converted / exposed AS conversion_rate
    FROM
    (
        SELECT experiment_id, variant, converted AS v_converted
        FROM {database}.kpi_experiment_conversions
    ) AS c
    GROUP BY experiment_id, variant
) AS v
ALL INNER JOIN
(
    SELECT
        experiment_id,
        if(has(groupArray(x_variant), 'control'), 'control', min(x_variant)) AS control_variant,
        groupArray(x_variant) AS x_variants,
        groupArray(x_exposed) AS x_exposed_all,
        groupArray(x_converted) AS x_converted_all,
        x_exposed_all[indexOf(x_variants, control_variant)] AS control_exposed,
        x_converted_all[indexOf(x_variants, control_variant)] AS control_converted,
        control_converted / control_exposed AS control_rate,
        count() AS variants,
        sum(x_exposed) AS total_exposed,
        variants * sum(x_exposed * x_exposed) / total_exposed - total_exposed AS srm_chi2,
        variants - 1 AS srm_df,
        multiIf(srm_df = 1, 1 - erf(sqrt(srm_chi2 / 2)),
                srm_df = 2, exp(-srm_chi2 / 2),
                srm_df > 2, 0.5 * (1 - erf(
                    (pow(srm_chi2 / srm_df, 1 / 3) - (1 - 2 / (9 * srm_df)))
                    / sqrt(2 / (9 * srm_df)) / sqrt(2))),
                NULL) AS srm_p_value
    FROM
    (
        SELECT experiment_id, variant AS x_variant, count() AS x_exposed,
               sum(converted) AS x_converted
        FROM {database}.kpi_experiment_conversions
        GROUP BY experiment_id, variant
    ) AS x
    GROUP BY experiment_id
) AS e USING experiment_id;
