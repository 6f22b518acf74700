-- KPI: weekly retention cohorts.
--
-- A person's cohort is the first week (Monday, UTC) with activity (kpi_weekly_activity:
-- a tracking call or an order created or paid). For every cohort and every week since,
-- up to the latest week with activity, active_persons counts the cohort's persons active
-- in that week (0 when none); retention_rate = active_persons / cohort_size, 1 at week 0.
-- The activity is read once: per cohort, the active counts by week offset are collected
-- into arrays, and the grid of offsets is expanded from them.

CREATE VIEW IF NOT EXISTS {database}.kpi_retention_weekly AS
SELECT
    cohort_week,
    week_offset,
    addDays(cohort_week, toInt32(week_offset) * 7) AS week,
    cohort_size,
    active_persons,
    active_persons / cohort_size AS retention_rate
FROM
(
    SELECT
        c_week AS cohort_week,
        c_actives[indexOf(c_offsets, toUInt32(0))] AS cohort_size,
        toUInt32(arrayJoin(range(toUInt64(intDiv(max_week - c_week, 7) + 1)))) AS week_offset,
        c_actives[indexOf(c_offsets, week_offset)] AS active_persons
    FROM
    (
        SELECT groupArray(cohort_week) AS all_weeks, groupArray(offsets) AS all_offsets,
               groupArray(actives) AS all_actives, max(last_week) AS max_week
        FROM
        (
            SELECT cohort_week, groupArray(week_offset) AS offsets,
                   groupArray(n_active) AS actives,
                   addDays(cohort_week, toInt32(max(week_offset)) * 7) AS last_week
            FROM
            (
                SELECT p_cohort_week AS cohort_week,
                       toUInt32(intDiv(p_week - p_cohort_week, 7)) AS week_offset,
                       count() AS n_active
                FROM
                (
                    SELECT person_key, min(week) AS p_cohort_week, groupArray(week) AS p_weeks
                    FROM {database}.kpi_weekly_activity
                    GROUP BY person_key
                ) AS pp
                ARRAY JOIN p_weeks AS p_week
                GROUP BY cohort_week, week_offset
            ) AS act
            GROUP BY cohort_week
        ) AS per_cohort
    ) AS all_cohorts
    ARRAY JOIN all_weeks AS c_week, all_offsets AS c_offsets, all_actives AS c_actives
) AS grid;
