-- Calls without an organization (the seed's check counts the completed ones), calls with a
-- duration a pass counts as 0 (NULL, negative, or no usable number: NaN, infinite, beyond
-- bigint), and minutes_transcribed rows whose value the usage_metrics ledger leaves out.
SELECT count(*) FILTER (WHERE c.organization_id IS NULL AND c.status = 'completed') AS orphaned_completed,
       count(*) FILTER (WHERE c.organization_id IS NULL AND c.status IS DISTINCT FROM 'completed') AS orphaned_other,
       count(*) FILTER (WHERE c.status = 'completed' AND c.duration_minutes IS NULL) AS null_durations,
       count(*) FILTER (WHERE c.status = 'completed' AND c.duration_minutes < 0) AS negative_durations,
       count(*) FILTER (WHERE c.status = 'completed'
                          AND c.duration_minutes::numeric > 9223372036854775807) AS invalid_durations,
       (SELECT count(*) FROM public.usage_metrics m
         WHERE m.metric_type = 'minutes_transcribed'
           AND NOT (m.metric_value::numeric BETWEEN -9223372036854775807 AND 9223372036854775807))
         AS invalid_metric_values
  FROM public.calls c
 WHERE c.organization_id IS NULL
    OR (c.status = 'completed'
        AND (c.duration_minutes IS NULL OR c.duration_minutes < 0
             OR c.duration_minutes::numeric > 9223372036854775807))
