-- The stall clock, from the journal (any instance's passes count): when the last successful
-- pass finished, when the first pass ever started (the clock's start while none succeeded),
-- the latest failure's error, and the database's own clock. Reverts are not passes.
SELECT (SELECT r.finished_at FROM reconciler.runs r
         WHERE r.status = 'ok' AND r.mode <> 'revert'
         ORDER BY r.started_at DESC LIMIT 1) AS last_success_at,
       (SELECT r.started_at FROM reconciler.runs r
         WHERE r.mode <> 'revert'
         ORDER BY r.started_at LIMIT 1) AS first_run_at,
       (SELECT r.status || COALESCE(': ' || r.error, '') FROM reconciler.runs r
         WHERE r.mode <> 'revert' AND r.status NOT IN ('ok', 'running')
         ORDER BY r.started_at DESC LIMIT 1) AS last_problem,
       pg_catalog.now() AS now
