-- The incremental comparison (docs/design.md, "Cost follows activity"): from the change log
-- alone. After every pass each organization is in sync (counter = truth ledger, and its ledger
-- mismatch, if any, recorded) or has a marker in the log. Since then, the log holds what every
-- statement changed, per organization: ledger deltas and counter deltas. An organization whose
-- counter moved exactly as its truth ledger did, and whose other ledger moved with it, is
-- still in sync: nothing of it is read. Every other organization in the log is a candidate,
-- re-read exactly from the ledgers (drifted_orgs.sql, filtered) before anything is settled or
-- repaired. So the cost is the log's size, not the organizations' history or number. The
-- log's pending rows only (reconciler.pending_changes: those the latest consuming snapshot
-- did not see).
--
-- Candidates: a marker (counter_delta NULL: a counter set from or to NULL or a non-number,
-- an organization that appeared or went, a pass's own "look again"); a counter delta that is
-- not the truth ledger's; ledgers that moved apart; a ledger mismatch already recorded (its
-- numbers may change); with usage.source = usage_metrics, a fractional minutes delta (the
-- rounding of a total is not additive).
--
-- Rows, in drifted_orgs.sql's layout (only id and kind matter for a candidate):
--   'org'    a candidate
--   'total'  orgs_checked (organizations in the log), log rows (in call_count), and whether a
--            row names no organization (a TRUNCATE: in stored_invalid): the pass then sweeps
-- Template: {tracked_calls}: calls_ceil, calls_round or calls_floor (usage.rounding);
--   {source_is_metrics}: true with usage.source = usage_metrics.
-- $1 timestamptz: start of the billing period (NULL for all_time); only changes of rows in the
--    period move the period's ledgers.
WITH per_org AS (
  SELECT ch.organization_id,
         count(*) AS log_rows,
         bool_or(ch.counter_delta IS NULL) AS marked,
         COALESCE(sum(ch.counter_delta), 0) AS d_counter,
         COALESCE(sum(ch.{tracked_calls}) FILTER (
           WHERE $1::timestamptz IS NULL OR ch.month >= ($1 AT TIME ZONE 'UTC')::date), 0) AS d_calls,
         COALESCE(sum(ch.metrics_raw) FILTER (
           WHERE $1::timestamptz IS NULL OR ch.month >= ($1 AT TIME ZONE 'UTC')::date), 0) AS d_metrics
    FROM reconciler.pending_changes ch
   GROUP BY ch.organization_id
),
candidates AS (
  SELECT p.organization_id
    FROM per_org p
   WHERE p.organization_id IS NOT NULL
     AND (p.marked
          OR p.d_counter <> CASE WHEN {source_is_metrics} THEN p.d_metrics ELSE p.d_calls END
          OR p.d_metrics <> p.d_calls
          OR ({source_is_metrics} AND p.d_metrics <> pg_catalog.trunc(p.d_metrics))
          OR EXISTS (SELECT 1 FROM reconciler.ledger_mismatches lm
                      WHERE lm.organization_id = p.organization_id))
)
SELECT 'org' AS kind, c.organization_id AS id, NULL::text AS name, NULL::bigint AS stored,
       false AS stored_invalid, 0::bigint AS call_count, 0::bigint AS calls_minutes,
       0::bigint AS metric_count, 0::bigint AS metrics_minutes, NULL::bigint AS quota,
       NULL::text AS status, NULL::bigint AS orgs_checked, NULL::bigint AS billed_minutes,
       NULL::bigint AS unowned_metric_minutes, NULL::bigint AS mismatches,
       NULL::bigint AS unknown_status_calls, NULL::bigint[] AS bad_values
  FROM candidates c
UNION ALL
SELECT 'total', NULL, NULL, NULL,
       COALESCE(bool_or(p.organization_id IS NULL), false),
       COALESCE(sum(p.log_rows), 0)::bigint, NULL, NULL, NULL, NULL, NULL,
       count(p.organization_id), NULL, 0, NULL, NULL, NULL
  FROM per_org p
