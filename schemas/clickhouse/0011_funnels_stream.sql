-- Per-person funnel and experiment rows from zt.funnels (`zt process funnels`,
-- crates/zt-process/src/funnel.rs; docs/sink.md, "Processed topics"). A person's row is
-- replaced by one with a larger `version` whenever late data changes it, and a person merged
-- into another gets a row with deleted = 1 and version 2^62: read with FINAL (or
-- argMax(..., version)) and `deleted = 0`. Every version of one row has the same Kafka key,
-- hence the same partition and, on a cluster, the same shard, so FINAL sees them together.
-- These supersede funnel_aggregates / experiment_aggregates (0009), which nothing loads.

-- funnel_progress: one row per (funnel, person): the deepest step reached (0 = none), the
-- time and breakdown of the event that started that chain, the person's first experiment
-- exposure ('' when none).
CREATE TABLE IF NOT EXISTS {database}.funnel_progress
(
    funnel_id String,
    person_id String,
    level UInt8,
    entry_at_ms Int64,
    channel String,
    campaign String,
    device String,
    experiment_id String,
    variant String,
    version UInt64,
    deleted UInt8,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (funnel_id, person_id);

-- experiment_progress: one row per (experiment, person): the variant and time of the first
-- exposure, and whether (and when first) a conversion event followed it.
CREATE TABLE IF NOT EXISTS {database}.experiment_progress
(
    experiment_id String,
    person_id String,
    variant String,
    exposed_at_ms Int64,
    converted UInt8,
    converted_at_ms Int64,
    version UInt64,
    deleted UInt8,
    _topic String,
    _partition Int32,
    _offset Int64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (experiment_id, person_id);

-- kpi_funnel_stream: per funnel, entry day (UTC day of entry_at_ms), channel, campaign,
-- experiment, variant and device, and per step 1 .. the deepest level reached there: the
-- persons who reached at least that step, the persons who entered (step 1) and
-- conversion_from_step1 = persons / entered. Persons at level 0 have not entered.
-- (ClickHouse 18.16 has only the one-argument range(): steps are range(max_level) + 1.)
CREATE VIEW IF NOT EXISTS {database}.kpi_funnel_stream AS
SELECT
    funnel_id,
    day,
    channel,
    campaign,
    experiment_id,
    variant,
    device,
    step,
    arraySum(arrayMap((l, n) -> if(l >= step, n, 0), levels, level_persons)) AS persons,
    entered,
    persons / entered AS conversion_from_step1
FROM
(
    SELECT
        funnel_id, day, channel, campaign, experiment_id, variant, device,
        groupArray(p_level) AS levels,
        groupArray(p_persons) AS level_persons,
        sum(p_persons) AS entered,
        max(p_level) AS max_level
    FROM
    (
        SELECT
            funnel_id,
            toDate(toDateTime(intDiv(entry_at_ms, 1000), 'UTC')) AS day,
            channel, campaign, experiment_id, variant, device,
            level AS p_level,
            count() AS p_persons
        FROM
        (
            SELECT funnel_id, entry_at_ms, channel, campaign, experiment_id, variant, device,
                   level, deleted
            FROM {database}.funnel_progress FINAL
        ) AS fp
        WHERE deleted = 0 AND level > 0
        GROUP BY funnel_id, day, channel, campaign, experiment_id, variant, device, p_level
    ) AS hist
    GROUP BY funnel_id, day, channel, campaign, experiment_id, variant, device
) AS g
ARRAY JOIN arrayMap(x -> toUInt8(x + 1), range(max_level)) AS step;

-- kpi_experiment_conversions_stream: the streamed counterpart of kpi_experiment_conversions
-- (0110): one row per exposed person, its first variant and whether it converted after the
-- exposure, from experiment_progress (newest version, merged-away persons left out).
CREATE VIEW IF NOT EXISTS {database}.kpi_experiment_conversions_stream AS
SELECT
    person_id AS person_key,
    experiment_id,
    variant,
    exposed_at_ms,
    converted,
    converted_at_ms
FROM
(
    SELECT person_id, experiment_id, variant, exposed_at_ms, converted, converted_at_ms,
           deleted
    FROM {database}.experiment_progress FINAL
) AS ep
WHERE deleted = 0;

-- kpi_ab_test_stream: kpi_ab_test (0110) column for column and formula for formula, over
-- kpi_experiment_conversions_stream: exposed = persons, converted = sum(converted). The
-- control is the variant named 'control', else the alphabetically first; uplift_abs and
-- uplift_rel against it, 95 % Wald interval (unpooled), pooled two-proportion z test with
-- a two-sided p-value via erf, and the sample-ratio-mismatch chi-square (equal allocation).
CREATE VIEW IF NOT EXISTS {database}.kpi_ab_test_stream AS
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
        FROM {database}.kpi_experiment_conversions_stream
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
        FROM {database}.kpi_experiment_conversions_stream
        GROUP BY experiment_id, variant
    ) AS x
    GROUP BY experiment_id
) AS e USING experiment_id;
