-- Take the log rows this snapshot sees out of the log (rows naming no organization, a
-- TRUNCATE's, stay: only a sweep settles them), in the transaction whose comparison read them:
-- rows logged by transactions that commit later are not visible here and stay for the next
-- pass. No table lock: the application's writes to the log never wait on the pass.
-- $1 bigint lock key, $2 integer the backend holding it: fenced, nothing is deleted unless
-- that backend holds the lock.
-- Returns how many log rows were taken.
WITH may_write AS (
  SELECT reconciler.holds_lock($1, $2) AS ok
),
taken AS (
  DELETE FROM reconciler.changes c
   WHERE (SELECT ok FROM may_write)
     AND c.organization_id IS NOT NULL
  RETURNING 1
)
SELECT (SELECT count(*) FROM taken) AS folded, (SELECT ok FROM may_write) AS held
