-- Bring reconciler.ledger_mismatches (V7) up to date with what the comparison found changed,
-- and return what really changed (a replica's stale copy of the table may name a change that
-- is already recorded: it comes back as nothing, so it is logged once).
-- $1 uuid[] organizations, $2 bigint[] calls minutes, $3 bigint[] usage_metrics minutes,
-- $4 text[] 'appeared', 'changed' or 'resolved', $5 uuid run id, $6 bigint lock key,
-- $7 integer the backend holding it: fenced, nothing is written (or returned) unless that
-- backend holds the lock
WITH wanted AS (
  SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[])
           AS w(organization_id, calls_minutes, metrics_minutes, change)
),
may_write AS (
  SELECT reconciler.holds_lock($6, $7) AS ok
),
resolved AS (
  DELETE FROM reconciler.ledger_mismatches lm
   USING wanted w
   WHERE (SELECT ok FROM may_write)
     AND w.change = 'resolved'
     AND lm.organization_id = w.organization_id
  RETURNING lm.organization_id, lm.calls_minutes, lm.metrics_minutes, 'resolved'::text AS change
),
recorded AS (
  INSERT INTO reconciler.ledger_mismatches AS lm
         (organization_id, calls_minutes, metrics_minutes, first_run_id, last_run_id)
  SELECT w.organization_id, w.calls_minutes, w.metrics_minutes, $5, $5
    FROM wanted w
   WHERE (SELECT ok FROM may_write)
     AND w.change <> 'resolved'
  ON CONFLICT (organization_id) DO UPDATE
     SET calls_minutes = EXCLUDED.calls_minutes,
         metrics_minutes = EXCLUDED.metrics_minutes,
         changed_at = pg_catalog.now(),
         last_run_id = EXCLUDED.last_run_id
   WHERE (lm.calls_minutes, lm.metrics_minutes)
         IS DISTINCT FROM (EXCLUDED.calls_minutes, EXCLUDED.metrics_minutes)
  -- xmax is 0 on a freshly inserted row version, set on an updated one.
  RETURNING lm.organization_id, lm.calls_minutes, lm.metrics_minutes,
            CASE WHEN lm.xmax = 0 THEN 'appeared' ELSE 'changed' END AS change
)
SELECT x.organization_id, o.name, x.calls_minutes, x.metrics_minutes, x.change
  FROM (SELECT * FROM recorded UNION ALL SELECT * FROM resolved) x
  LEFT JOIN public.organizations o ON o.id = x.organization_id
 ORDER BY x.organization_id
