-- The change tracking (V8): which of its triggers fire in a normal session (tgenabled 'O'
-- fires unless session_replication_role = replica, 'A' always; 'D' is disabled, 'R' fires only
-- under replication), whether a sweep built the totals, and how much of the log waits to be
-- consumed by the next pass (pending), and how many consumed rows wait for their partition
-- to be emptied (V10).
SELECT (SELECT t.initialized_at FROM reconciler.tracking t) AS initialized_at,
       (SELECT count(*) FROM reconciler.pending_changes) AS log_rows,
       (SELECT (EXTRACT(epoch FROM pg_catalog.now() - min(ch.logged_at)))::bigint
          FROM reconciler.pending_changes ch) AS oldest_seconds,
       (SELECT count(*) FROM reconciler.changes) AS stored_rows,
       ARRAY(SELECT c.relname || '.' || tg.tgname
               FROM pg_catalog.pg_trigger tg
               JOIN pg_catalog.pg_class c ON c.oid = tg.tgrelid
               JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND tg.tgname LIKE 'synqall\_reconciler\_%'
                AND tg.tgenabled IN ('O', 'A')
              ORDER BY 1) AS firing
