-- A snapshot becomes the consumed one: every log row it saw is consumed, rows of
-- transactions it did not see (in flight, or later) stay pending (reconciler.pending_changes).
-- $3 (text) is a sweep's comparison snapshot; NULL means this transaction's own: in a
-- REPEATABLE READ transaction pg_current_snapshot() is the transaction's snapshot, taken by
-- its first query, before this transaction wrote anything, so the rows it writes itself
-- (markers) stay pending too, as a sweep's markers (written after its snapshot) do.
-- $1 bigint lock key, $2 integer the backend holding it: fenced, nothing is recorded unless
-- that backend holds the lock.
UPDATE reconciler.tracking
   SET consumed_snapshot = COALESCE($3::text::pg_snapshot, pg_catalog.pg_current_snapshot())
 WHERE (SELECT reconciler.holds_lock($1, $2))
RETURNING true AS held
