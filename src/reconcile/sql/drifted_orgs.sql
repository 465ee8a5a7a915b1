-- The comparison of every counter with both ledgers, in one statement inside the database (or,
-- filtered, of some organizations: the exact re-read of an incremental pass's candidates):
--   kind = 'org'       an organization whose stored counter disagrees with its truth ledger, or
--                      that is over its quota
--   kind = 'mismatch'  a ledger mismatch (calls and usage_metrics disagree) that appeared,
--                      changed or resolved against reconciler.ledger_mismatches (V7): an
--                      unchanged mismatch costs no row
--   kind = 'total'     orgs_checked, billed_minutes, unowned_metric_minutes, mismatches (now),
--                      unknown_status_calls (calls of a status the configuration does not
--                      know: when there are any, sql/unknown_statuses.sql names them; NULL
--                      from the sweep, which does not count them)
-- The client receives rows in proportion to disagreement and change, not to the number of
-- organizations, and each ledger is read once. Each ledger is grouped by organization alone
-- (a second grouping key, or a FILTER more per row, costs several percent of the whole sweep).
--
-- Template, filled in by queries.rs:
--   {stored}          used_minutes as bigint; NULL when NULL, or when a fractional counter
--                     holds no whole number of minutes ({stored_invalid} then says so)
--   {stored_invalid}  true for a counter value that cannot be compared (10.5, NaN, huge)
--   {call_rows}, {unknown_calls}, {unknown_status_total}  which calls are read, and how those
--                     of an unknown status are counted: the sweep reads completed calls only
--                     (`c.status = 'completed'`, 0, NULL), as the floor does; counting them
--                     in the same scan cost ~12% of the sweep's CPU, so a sweep asks the
--                     planner's statistics first (sql/status_statistics.sql). doctor and the
--                     filtered read also read the calls of unknown statuses and count them.
--   {completed_call_total}  per-org total of c.duration_minutes over completed calls: NULL,
--                     negative, NaN, infinite and beyond-bigint durations count 0, numeric ones
--                     are rounded per call
--   {metric_sum}      the raw sum(m.metric_value): the per-row work of the floor
--   {metric_minutes}, {unowned_metric_minutes}  the minutes of mt.metric_sum, of an
--                     organization and of the rows without one (rounding applied to the
--                     total, NaN, infinite and beyond-bigint values left out: where the raw
--                     sum is not a usable number, those rows are summed again without them;
--                     queries.rs metric_sum_exprs)
--   {expected}        calls_minutes or metrics_minutes (usage.source)
--   {call_count}      count(*): with unknown_calls, the calls ledger's fingerprint
--   {metric_count}    count(*) with usage.source = usage_metrics (its fingerprint), else 0:
--                     every aggregate costs per row
--   {quota}           o.max_minutes_monthly::bigint with usage.period = calendar_month (and an
--                     integer column present), else NULL::bigint: over-quota organizations are
--                     returned too
--   {filter_c}, {filter_m}, {filter_o}, {filter_lm}  empty (every organization), or
--                     `AND x.organization_id = ANY ($3::uuid[])` (some)
--   {bad_call_counts}, {bad_metric_count}, {bad_values}  a filtered read also counts the
--                     bad values it left out (NULL, negative and unusable durations of
--                     completed calls; unusable usage values) in the rows it reads anyway, so
--                     the pass need not read those organizations again to name them; for
--                     every organization they are NULL (a per-row cost of the whole sweep)
--   {order_c}, {order_m}  empty, or `ORDER BY x.organization_id` for the one ledger a sweep
--                     reads through its covering index while the other reads its table
--                     (reconcile/access.rs: with sorts off only the index-only scan meets it)
-- $1 timestamptz: start of the billing period (NULL for all_time)
-- $2 text[]: the known call statuses (usage.known_statuses), in the statements that count the
--    calls of any other status (or none); those calls are never minutes (the sweep has no $2)
-- $3 uuid[]: the organizations of a filtered read (NULL otherwise)
WITH call_totals AS (
  -- Completed calls, and those of an unknown status (counted apart, never as minutes).
  SELECT c.organization_id,
         {call_count} AS all_calls,
         {unknown_calls} AS unknown_calls,
         {completed_call_total} AS call_minutes,
         {bad_call_counts}
    FROM public.calls c
   WHERE {call_rows}
     AND ($1::timestamptz IS NULL OR c.created_at >= $1)
     {filter_c}
   GROUP BY c.organization_id
   {order_c}
),
-- Includes the NULL-organization group: those rows are counted in the totals row, never
-- attributed to anyone.
metric_totals AS (
  SELECT m.organization_id,
         {metric_count} AS metric_count,
         {metric_sum} AS metric_sum,
         {bad_metric_count}
    FROM public.usage_metrics m
   WHERE m.metric_type = 'minutes_transcribed'
     AND ($1::timestamptz IS NULL OR m.created_at >= $1)
     {filter_m}
   GROUP BY m.organization_id
   {order_m}
),
compared AS (
  SELECT o.id,
         o.name,
         {stored} AS stored,
         {stored_invalid} AS stored_invalid,
         COALESCE(ct.all_calls - ct.unknown_calls, 0) AS call_count,
         COALESCE(ct.call_minutes, 0) AS calls_minutes,
         COALESCE(mt.metric_count, 0) AS metric_count,
         {metric_minutes} AS metrics_minutes,
         {quota} AS quota,
         {bad_values} AS bad_values
    FROM public.organizations o
    LEFT JOIN call_totals ct ON ct.organization_id = o.id
    LEFT JOIN metric_totals mt ON mt.organization_id = o.id
   WHERE true {filter_o}
),
mismatched AS (
  SELECT id, name, calls_minutes, metrics_minutes
    FROM compared
   WHERE calls_minutes <> metrics_minutes
),
recorded AS (
  SELECT lm.organization_id, lm.calls_minutes, lm.metrics_minutes
    FROM reconciler.ledger_mismatches lm
   WHERE true {filter_lm}
)
SELECT 'org' AS kind, id, name, stored, stored_invalid, call_count, calls_minutes,
       metric_count, metrics_minutes, quota, NULL::text AS status, NULL::bigint AS orgs_checked,
       NULL::bigint AS billed_minutes, NULL::bigint AS unowned_metric_minutes,
       NULL::bigint AS mismatches, NULL::bigint AS unknown_status_calls, bad_values
  FROM compared
 WHERE stored IS DISTINCT FROM {expected}
    OR stored_invalid
    OR {expected} > quota
UNION ALL
-- Ledger mismatches: only what differs from the recorded state.
SELECT 'mismatch', COALESCE(n.id, r.organization_id),
       COALESCE(n.name, (SELECT o.name FROM public.organizations o
                          WHERE o.id = r.organization_id)),
       NULL, NULL, NULL, COALESCE(n.calls_minutes, r.calls_minutes), NULL,
       COALESCE(n.metrics_minutes, r.metrics_minutes), NULL,
       CASE WHEN r.organization_id IS NULL THEN 'appeared'
            WHEN n.id IS NULL THEN 'resolved'
            ELSE 'changed' END,
       NULL, NULL, NULL, NULL, NULL, NULL
  FROM mismatched n
  FULL JOIN recorded r ON r.organization_id = n.id
 WHERE n.id IS NULL OR r.organization_id IS NULL
    OR (n.calls_minutes, n.metrics_minutes) IS DISTINCT FROM (r.calls_minutes, r.metrics_minutes)
UNION ALL
SELECT 'total', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, count(*),
       LEAST(COALESCE(sum(GREATEST(stored, 0)), 0), 9223372036854775807)::bigint,
       COALESCE((SELECT {unowned_metric_minutes} FROM metric_totals mt
                  WHERE mt.organization_id IS NULL), 0),
       (SELECT count(*) FROM mismatched),
       {unknown_status_total}, NULL
  FROM compared
