-- Count and minutes of the minutes_transcribed rows of some organizations: the fingerprint when
-- usage.source = usage_metrics. Template: {metric_total} as in drifted_orgs.sql.
-- $1 uuid[]: organizations; $2 timestamptz: start of the billing period (NULL for all_time)
SELECT m.organization_id,
       count(*) AS entries,
       {metric_total} AS minutes
  FROM public.usage_metrics m
 WHERE m.organization_id = ANY ($1)
   AND m.metric_type = 'minutes_transcribed'
   AND ($2::timestamptz IS NULL OR m.created_at >= $2)
 GROUP BY m.organization_id
