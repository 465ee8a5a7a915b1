-- Who holds lock $1 now (pg_locks) and what its lease says. A holder with no lease row, or a
-- lease row of another backend, is someone that does not renew a lease (an older reconciler, a
-- person in psql): never treated as stale. $1 bigint lock key
SELECT l.pid AS lock_pid, le.holder_pid, le.host, le.pass_pid,
       extract(epoch FROM pg_catalog.now() - le.heartbeat_at)::float8 AS heartbeat_age_s
  FROM pg_catalog.pg_locks l
  LEFT JOIN reconciler.lease le ON le.lock_key = $1 AND le.released_at IS NULL
 WHERE l.locktype = 'advisory'
   AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                      WHERE d.datname = pg_catalog.current_database())
   AND l.classid = ((($1::bigint) >> 32) & 4294967295)::oid
   AND l.objid = (($1::bigint) & 4294967295)::oid
   AND l.objsubid = 1
   AND l.granted
