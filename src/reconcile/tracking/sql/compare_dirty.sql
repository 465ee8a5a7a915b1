-- The incremental comparison (docs/design.md, "Cost follows activity"): only the
-- organizations in the change log, each counter against its ledgers as the change tracking
-- knows them: reconciler.ledger_totals plus the pending rows of reconciler.changes (at any
-- snapshot the two add up to the ledgers). It reads the log, the totals and the counters of
-- those organizations, never the ledgers: cost follows activity, not history. Run in the same
-- REPEATABLE READ transaction as fold_changes.sql, which then folds exactly the rows read here.
-- A row this marks 'org' is only a candidate: the pass re-reads it exactly from the ledgers
-- (drifted_orgs.sql, filtered) before it settles and repairs.
--
-- Rows, in drifted_orgs.sql's layout:
--   'org'       a candidate: counter different from the tracked ledger, or over its quota
--   'mismatch'  a ledger mismatch that appeared, changed or resolved, against
--               reconciler.ledger_mismatches, for the organizations in the log
--   'total'     orgs_checked (organizations in the log), log rows (in call_count), and
--               whether a row names no organization (a TRUNCATE: in stored_invalid): the
--               pass then sweeps instead
-- Template: {stored}, {stored_invalid}, {quota}, {expected} as in drifted_orgs.sql;
--   {tracked_calls}: calls_ceil, calls_round or calls_floor (usage.rounding);
--   {tracked_metrics}: the metrics total from t.metrics_raw, rounded as the pass rounds it.
-- $1 timestamptz: start of the billing period (NULL for all_time)
WITH pending AS (
  SELECT ch.organization_id, ch.month, ch.{tracked_calls} AS calls_raw, ch.metrics_raw
    FROM reconciler.changes ch
),
dirty AS (
  SELECT DISTINCT p.organization_id FROM pending p WHERE p.organization_id IS NOT NULL
),
tracked AS (
  SELECT d.organization_id,
         COALESCE(sum(x.calls_raw), 0) AS calls_raw,
         COALESCE(sum(x.metrics_raw), 0) AS metrics_raw
    FROM dirty d
    LEFT JOIN (SELECT lt.organization_id, lt.month, lt.{tracked_calls} AS calls_raw,
                      lt.metrics_raw
                 FROM reconciler.ledger_totals lt
                WHERE lt.organization_id IN (SELECT organization_id FROM dirty)
               UNION ALL
               SELECT p.organization_id, p.month, p.calls_raw, p.metrics_raw
                 FROM pending p
                WHERE p.month IS NOT NULL) x
      ON x.organization_id = d.organization_id
     AND ($1::timestamptz IS NULL OR x.month >= ($1 AT TIME ZONE 'UTC')::date)
   GROUP BY d.organization_id
),
compared AS (
  SELECT o.id, o.name, {stored} AS stored, {stored_invalid} AS stored_invalid,
         LEAST(t.calls_raw, 9223372036854775807)::bigint AS calls_minutes,
         {tracked_metrics} AS metrics_minutes,
         {quota} AS quota
    FROM tracked t
    JOIN public.organizations o ON o.id = t.organization_id
),
mismatched AS (
  SELECT id, name, calls_minutes, metrics_minutes
    FROM compared
   WHERE calls_minutes <> metrics_minutes
),
recorded AS (
  SELECT lm.organization_id, lm.calls_minutes, lm.metrics_minutes
    FROM reconciler.ledger_mismatches lm
   WHERE lm.organization_id IN (SELECT organization_id FROM dirty)
)
SELECT 'org' AS kind, id, name, stored, stored_invalid, 0::bigint AS call_count,
       calls_minutes, 0::bigint AS metric_count, metrics_minutes, quota, NULL::text AS status,
       NULL::bigint AS orgs_checked, NULL::bigint AS billed_minutes,
       NULL::bigint AS unowned_metric_minutes, NULL::bigint AS mismatches,
       false AS tracked_wrong
  FROM compared
 WHERE stored IS DISTINCT FROM {expected}
    OR stored_invalid
    OR {expected} > quota
UNION ALL
SELECT 'mismatch', COALESCE(n.id, r.organization_id),
       COALESCE(n.name, (SELECT o.name FROM public.organizations o
                          WHERE o.id = r.organization_id)),
       NULL, NULL, NULL, COALESCE(n.calls_minutes, r.calls_minutes), NULL,
       COALESCE(n.metrics_minutes, r.metrics_minutes), NULL,
       CASE WHEN r.organization_id IS NULL THEN 'appeared'
            WHEN n.id IS NULL THEN 'resolved'
            ELSE 'changed' END,
       NULL, NULL, NULL, NULL, NULL
  FROM mismatched n
  FULL JOIN recorded r ON r.organization_id = n.id
 WHERE n.id IS NULL OR r.organization_id IS NULL
    OR (n.calls_minutes, n.metrics_minutes) IS DISTINCT FROM (r.calls_minutes, r.metrics_minutes)
UNION ALL
SELECT 'total', NULL, NULL, NULL,
       EXISTS (SELECT 1 FROM pending p WHERE p.organization_id IS NULL),
       (SELECT count(*) FROM pending), NULL, NULL, NULL, NULL, NULL,
       (SELECT count(*) FROM dirty), NULL, 0, NULL, NULL
