-- Runs still 'running' while we hold the advisory lock were abandoned: their process ended
-- (killed, crashed, lost its connection) before closing them. Close them as failed (fenced:
-- only while backend $2 holds lock $1).
UPDATE reconciler.runs
   SET status = 'failed', finished_at = pg_catalog.now(),
       error = 'abandoned: the process running it ended before closing it'
 WHERE status = 'running'
   AND (SELECT reconciler.holds_lock($1, $2))
RETURNING id
