-- Completed calls with a duration the pass counts as 0 (NULL, negative, or not a usable
-- number: NaN, infinite, beyond bigint) in some organizations: run for the drifted ones only,
-- through the organization_id index, so that bad data is named where it matters without a
-- second scan of the whole table.
-- Template: {invalid_duration} is the condition for "not a usable number" (false for integer
-- columns, which cannot hold one).
-- $1 uuid[]: organizations; $2 timestamptz: start of the billing period (NULL for all_time)
SELECT c.organization_id,
       count(*) FILTER (WHERE c.duration_minutes IS NULL) AS null_durations,
       count(*) FILTER (WHERE c.duration_minutes < 0) AS negative_durations,
       count(*) FILTER (WHERE {invalid_duration}) AS invalid_durations
  FROM public.calls c
 WHERE c.organization_id = ANY ($1)
   AND c.status = 'completed'
   AND (c.duration_minutes IS NULL OR c.duration_minutes < 0 OR {invalid_duration})
   AND ($2::timestamptz IS NULL OR c.created_at >= $2)
 GROUP BY c.organization_id
