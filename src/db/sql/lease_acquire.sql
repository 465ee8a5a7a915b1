-- Record this session as the holder of lock $1 (fenced: only while it holds the lock).
-- $1 bigint lock key, $2 uuid instance, $3 text host
INSERT INTO reconciler.lease AS l (lock_key, instance, host, holder_pid, acquired_at, heartbeat_at)
SELECT $1, $2, $3, pg_catalog.pg_backend_pid(), pg_catalog.now(), pg_catalog.now()
 WHERE (SELECT reconciler.holds_lock($1, pg_catalog.pg_backend_pid()))
ON CONFLICT (lock_key) DO UPDATE
   SET instance = EXCLUDED.instance, host = EXCLUDED.host, holder_pid = EXCLUDED.holder_pid,
       pass_pid = NULL, run_id = NULL, acquired_at = EXCLUDED.acquired_at,
       heartbeat_at = EXCLUDED.heartbeat_at, released_at = NULL
