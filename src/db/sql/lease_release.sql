-- The holder lets go. $1 bigint lock key
UPDATE reconciler.lease
   SET released_at = pg_catalog.now(), pass_pid = NULL
 WHERE lock_key = $1 AND holder_pid = pg_catalog.pg_backend_pid()
