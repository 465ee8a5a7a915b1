-- Fold the logged changes into reconciler.ledger_totals and take them out of the log, in one
-- statement (rows naming no organization, a TRUNCATE's, stay: only a sweep settles them): a row is deleted exactly when its deltas are added (the invariant
-- ledger = totals + pending changes holds at every snapshot). Rows logged by transactions that
-- commit later are not visible here and stay for the next pass. Organizations the pass must
-- look at again (candidates still being settled or repaired) get a marker row back.
-- $1 uuid[] organizations to mark again; $2 bigint lock key, $3 integer the backend holding
-- it: fenced, nothing is deleted or written unless that backend holds the lock.
-- Returns how many log rows were folded.
WITH may_write AS (
  SELECT reconciler.holds_lock($2, $3) AS ok
),
taken AS (
  DELETE FROM reconciler.changes c
   WHERE (SELECT ok FROM may_write)
     AND c.organization_id IS NOT NULL
  RETURNING c.organization_id, c.month, c.calls_ceil, c.calls_round, c.calls_floor,
            c.metrics_raw
),
summed AS (
  SELECT t.organization_id, t.month, sum(t.calls_ceil) AS calls_ceil,
         sum(t.calls_round) AS calls_round, sum(t.calls_floor) AS calls_floor,
         sum(t.metrics_raw) AS metrics_raw
    FROM taken t
   WHERE t.organization_id IS NOT NULL AND t.month IS NOT NULL
   GROUP BY t.organization_id, t.month
),
applied AS (
  INSERT INTO reconciler.ledger_totals AS lt
         (organization_id, month, calls_ceil, calls_round, calls_floor, metrics_raw)
  SELECT * FROM summed
  ON CONFLICT (organization_id, month) DO UPDATE
     SET calls_ceil = lt.calls_ceil + EXCLUDED.calls_ceil,
         calls_round = lt.calls_round + EXCLUDED.calls_round,
         calls_floor = lt.calls_floor + EXCLUDED.calls_floor,
         metrics_raw = lt.metrics_raw + EXCLUDED.metrics_raw
  RETURNING 1
),
marked AS (
  INSERT INTO reconciler.changes (organization_id)
  SELECT DISTINCT u.id FROM unnest($1::uuid[]) AS u(id)
   WHERE (SELECT ok FROM may_write)
  RETURNING 1
)
SELECT (SELECT count(*) FROM taken) AS folded,
       (SELECT count(*) FROM applied) AS totals_written,
       (SELECT count(*) FROM marked) AS marked,
       (SELECT ok FROM may_write) AS held
