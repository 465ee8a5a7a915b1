-- Write confirmed repairs and their journal rows in one statement (one transaction).
-- The counter is compared-and-set against the value read under the row lock, so a repair can
-- only ever replace the exact value it was computed from.
-- $1 uuid[] org ids, $2 bigint[] old values (NULL allowed), $3 bigint[] new values,
-- $4 bigint[] calls ledger totals, $5 bigint[] metrics ledger totals,
-- $6 uuid run id, $7 text period, $8 timestamptz period start (NULL for all_time),
-- $9 text[] reasons ('drift', or 'period_rollover' for a counter not reset at the month boundary),
-- $10 bigint lock key, $11 integer lock backend pid: fenced, written only while that backend
-- holds the lock (reconciler.holds_lock)
WITH wanted AS (
  SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[],
                       $9::text[])
           AS w(org_id, old_value, new_value, calls_minutes, metrics_minutes, reason)
),
repaired AS (
  UPDATE public.organizations o
     SET used_minutes = w.new_value,
         updated_at = pg_catalog.now()
    FROM wanted w
   WHERE o.id = w.org_id
     AND o.used_minutes IS NOT DISTINCT FROM w.old_value
     AND (SELECT reconciler.holds_lock($10, $11))
  RETURNING o.id, w.old_value, w.new_value, w.calls_minutes, w.metrics_minutes, w.reason
)
INSERT INTO reconciler.adjustments
       (run_id, organization_id, old_used_minutes, new_used_minutes, calls_minutes,
        metrics_minutes, period, period_start, reason)
SELECT $6, r.id, r.old_value, r.new_value, r.calls_minutes, r.metrics_minutes, $7, $8, r.reason
  FROM repaired r
RETURNING organization_id
