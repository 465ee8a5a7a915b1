-- Renew the lease of the session that holds it. $1 bigint lock key. No row: not ours any more.
UPDATE reconciler.lease
   SET heartbeat_at = pg_catalog.now()
 WHERE lock_key = $1 AND holder_pid = pg_catalog.pg_backend_pid() AND released_at IS NULL
   AND (SELECT reconciler.holds_lock($1, pg_catalog.pg_backend_pid()))
