-- The backend and run of the pass the lease holder runs now. $1 lock key, $2 pid, $3 run id
UPDATE reconciler.lease
   SET pass_pid = $2, run_id = $3
 WHERE lock_key = $1 AND holder_pid = pg_catalog.pg_backend_pid()
