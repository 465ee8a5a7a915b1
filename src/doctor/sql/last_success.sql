-- The latest successful pass (reverts are not passes), and how the latest pass of any outcome
-- ended.
SELECT (SELECT r.id FROM reconciler.runs r
         WHERE r.status = 'ok' AND r.mode <> 'revert'
         ORDER BY r.finished_at DESC LIMIT 1) AS last_ok_id,
       (SELECT max(r.finished_at) FROM reconciler.runs r
         WHERE r.status = 'ok' AND r.mode <> 'revert') AS last_ok_at,
       (SELECT r.status FROM reconciler.runs r
         WHERE r.mode <> 'revert' ORDER BY r.started_at DESC LIMIT 1) AS latest_status,
       (SELECT r.error FROM reconciler.runs r
         WHERE r.mode <> 'revert' ORDER BY r.started_at DESC LIMIT 1) AS latest_error,
       pg_catalog.now() AS now
