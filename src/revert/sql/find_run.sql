-- The run to revert. $1 uuid
SELECT r.id, r.mode, r.status, r.started_at, r.period, r.source, r.reverted_run_id
  FROM reconciler.runs r
 WHERE r.id = $1
