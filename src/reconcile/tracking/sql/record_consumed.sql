-- This transaction's snapshot becomes the consumed one: every log row it sees is consumed,
-- rows of transactions it does not see (in flight, or later) stay pending
-- (reconciler.pending_changes). In a REPEATABLE READ transaction pg_current_snapshot() is the
-- transaction's snapshot, taken by its first query, before this transaction wrote anything:
-- the rows it writes itself (markers) stay pending too.
-- $1 bigint lock key, $2 integer the backend holding it: fenced, nothing is recorded unless
-- that backend holds the lock.
UPDATE reconciler.tracking
   SET consumed_snapshot = pg_catalog.pg_current_snapshot()
 WHERE (SELECT reconciler.holds_lock($1, $2))
RETURNING true AS held
