-- Put counters back to what they were before the run, compare-and-set: only where the counter
-- still holds the value the run wrote. Each restore is journalled as an adjustment that points
-- at the one it undoes. $1 bigint[] adjustment ids, $2 uuid: the revert's own run id;
-- fenced: only while backend $4 holds lock $3
WITH restored AS (
  UPDATE public.organizations o
     SET used_minutes = a.old_used_minutes,
         updated_at = pg_catalog.now()
    FROM reconciler.adjustments a
   WHERE a.id = ANY ($1::bigint[])
     AND o.id = a.organization_id
     AND o.used_minutes IS NOT DISTINCT FROM a.new_used_minutes
     AND (SELECT reconciler.holds_lock($3, $4))
  RETURNING a.id, a.organization_id, a.old_used_minutes, a.new_used_minutes, a.calls_minutes,
            a.metrics_minutes, a.period, a.period_start
)
INSERT INTO reconciler.adjustments
       (run_id, organization_id, old_used_minutes, new_used_minutes, calls_minutes,
        metrics_minutes, period, period_start, reason, reverts_adjustment_id)
SELECT $2, r.organization_id, r.new_used_minutes, r.old_used_minutes, r.calls_minutes,
       r.metrics_minutes, r.period, r.period_start, 'revert', r.id
  FROM restored r
RETURNING reverts_adjustment_id
