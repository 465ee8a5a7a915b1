-- The latest passes, newest first, and when the last successful one finished. $1 bigint: how many
SELECT r.id, r.mode, r.host, r.started_at, r.finished_at,
       (extract(epoch FROM (r.finished_at - r.started_at)) * 1000)::bigint AS duration_ms,
       r.status, r.orgs_checked, r.drifted, r.repaired, r.lost_race, r.orphans_fixed,
       r.orphans_left, r.error,
       (SELECT max(finished_at) FROM reconciler.runs
         WHERE status = 'ok' AND mode <> 'revert') AS last_success_at,
       now() AS now,
       r.reverted_run_id, r.period_resets
  FROM reconciler.runs r
 ORDER BY r.started_at DESC
 LIMIT $1
