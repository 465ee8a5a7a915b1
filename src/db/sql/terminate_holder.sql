-- End a stale holder's sessions: its lock session, and its pass's session if that is still a
-- reconciler session. Ending a session of the same role needs no privilege beyond that.
-- $1 integer lock holder pid, $2 integer pass pid (NULL: none)
SELECT a.pid, pg_catalog.pg_terminate_backend(a.pid) AS terminated
  FROM pg_catalog.pg_stat_activity a
 WHERE a.pid <> pg_catalog.pg_backend_pid()
   AND (a.pid = $1 OR (a.pid = $2 AND a.application_name = 'synqall-reconciler'))
