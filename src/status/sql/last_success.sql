-- When the last successful pass finished (reverts are not passes), whatever --limit shows,
-- and the database's clock to measure its age by.
SELECT (SELECT max(finished_at) FROM reconciler.runs
         WHERE status = 'ok' AND mode <> 'revert') AS last_success_at,
       pg_catalog.now() AS now
