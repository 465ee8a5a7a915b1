-- Every organization whose stored counter disagrees with its truth ledger, or whose two ledgers
-- disagree, plus one totals row (is_total = true: orgs_checked, unowned_metric_minutes). Computed in one
-- statement inside the database: the client receives rows in proportion to drift, not to the
-- number of organizations.
--
-- Template, filled in by queries.rs:
--   {call_total}      per-org total of c.duration_minutes: NULL and negative durations count 0,
--                     numeric ones are rounded per call
--   {metric_total}    per-org total over sum(m.metric_value) (rounding applied to the total)
--   {expected}        calls_minutes or metrics_minutes (usage.source)
--   {call_count}, {metric_count}  count(*) for the truth ledger (its fingerprint), 0 for the
--                     other: every aggregate costs per row, and only the truth's count is used
--   {quota}           o.max_minutes_monthly with usage.period = calendar_month (and the column
--                     present), else NULL::integer: over-quota organizations are returned too
-- $1 timestamptz: start of the billing period (NULL for all_time)
WITH call_totals AS (
  SELECT c.organization_id,
         {call_count} AS call_count,
         {call_total} AS call_minutes
    FROM public.calls c
   WHERE c.status = 'completed'
     AND c.organization_id IS NOT NULL
     AND ($1::timestamptz IS NULL OR c.created_at >= $1)
   GROUP BY c.organization_id
),
-- Includes the NULL-organization group: those rows are counted in the totals row, never
-- attributed to anyone.
metric_totals AS (
  SELECT m.organization_id,
         {metric_count} AS metric_count,
         {metric_total} AS metric_minutes
    FROM public.usage_metrics m
   WHERE m.metric_type = 'minutes_transcribed'
     AND ($1::timestamptz IS NULL OR m.created_at >= $1)
   GROUP BY m.organization_id
),
compared AS (
  SELECT o.id,
         o.name,
         o.used_minutes AS stored,
         COALESCE(ct.call_count, 0) AS call_count,
         COALESCE(ct.call_minutes, 0) AS calls_minutes,
         COALESCE(mt.metric_count, 0) AS metric_count,
         COALESCE(mt.metric_minutes, 0) AS metrics_minutes,
         {quota} AS quota
    FROM public.organizations o
    LEFT JOIN call_totals ct ON ct.organization_id = o.id
    LEFT JOIN metric_totals mt ON mt.organization_id = o.id
)
SELECT false AS is_total, id, name, stored, call_count, calls_minutes, metric_count,
       metrics_minutes, quota, NULL::bigint AS orgs_checked, 0::bigint AS unowned_metric_minutes
  FROM compared
 WHERE stored IS DISTINCT FROM {expected}
    OR calls_minutes <> metrics_minutes
    OR {expected} > quota
UNION ALL
SELECT true, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*),
       COALESCE((SELECT metric_minutes FROM metric_totals WHERE organization_id IS NULL), 0)
  FROM compared
