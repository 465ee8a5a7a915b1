-- minutes_transcribed rows whose metric_value is not a usable number (NaN, infinite, beyond
-- bigint) and is left out of the usage_metrics ledger, per organization, for some
-- organizations (those reported by the pass), through the organization_id index.
-- Template: {invalid_metric} is the condition (false for integer columns).
-- $1 uuid[]: organizations; $2 timestamptz: start of the billing period (NULL for all_time)
SELECT m.organization_id, count(*) AS invalid_values
  FROM public.usage_metrics m
 WHERE m.organization_id = ANY ($1)
   AND m.metric_type = 'minutes_transcribed'
   AND {invalid_metric}
   AND ($2::timestamptz IS NULL OR m.created_at >= $2)
 GROUP BY m.organization_id
