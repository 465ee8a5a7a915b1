-- The previous calendar month's total per organization on the usage_metrics ledger (see
-- previous_call_totals.sql). Template: {metric_total} as in drifted_orgs.sql.
-- $1 uuid[] organizations, $2 timestamptz previous period start, $3 timestamptz period start
SELECT m.organization_id, {metric_total} AS minutes
  FROM public.usage_metrics m
 WHERE m.organization_id = ANY ($1)
   AND m.metric_type = 'minutes_transcribed'
   AND m.created_at >= $2
   AND m.created_at < $3
 GROUP BY m.organization_id
