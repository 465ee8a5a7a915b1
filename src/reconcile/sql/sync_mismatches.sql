-- Keep reconciler.ledger_mismatches (V7) for one range of organization ids, and return what
-- changed: mismatches that appeared or changed (their new minutes) and those that resolved
-- (the minutes last seen disagreeing). The pass calls it once per batch of the current
-- mismatches in ascending id order, with consecutive ranges that together cover every id, so
-- the client never holds more than a batch and only changes are written.
-- $1 uuid[] the current mismatches in the range, $2 bigint[] their calls minutes,
-- $3 bigint[] their usage_metrics minutes,
-- $4 uuid the range's lower bound, exclusive (NULL: from the first id),
-- $5 uuid its upper bound, inclusive (NULL: to the last id),
-- $6 uuid the run id, $7 bigint lock key, $8 integer the backend holding it: fenced, nothing
-- is written (or returned) unless that backend holds the lock
WITH current AS (
  SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[])
           AS c(organization_id, calls_minutes, metrics_minutes)
),
may_write AS (
  SELECT reconciler.holds_lock($7, $8) AS ok
),
resolved AS (
  DELETE FROM reconciler.ledger_mismatches lm
   WHERE (SELECT ok FROM may_write)
     AND ($4::uuid IS NULL OR lm.organization_id > $4::uuid)
     AND ($5::uuid IS NULL OR lm.organization_id <= $5::uuid)
     AND NOT EXISTS (SELECT 1 FROM current c WHERE c.organization_id = lm.organization_id)
  RETURNING lm.organization_id, lm.calls_minutes, lm.metrics_minutes
),
recorded AS (
  INSERT INTO reconciler.ledger_mismatches AS lm
         (organization_id, calls_minutes, metrics_minutes, first_run_id, last_run_id)
  SELECT c.organization_id, c.calls_minutes, c.metrics_minutes, $6, $6
    FROM current c
   WHERE (SELECT ok FROM may_write)
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
  FROM (SELECT * FROM recorded
        UNION ALL
        SELECT r.*, 'resolved' FROM resolved r) x
  LEFT JOIN public.organizations o ON o.id = x.organization_id
 ORDER BY x.organization_id
