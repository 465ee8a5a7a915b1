-- The latest passes, newest first. $1 bigint: how many
SELECT r.id, r.mode, r.host, r.started_at, r.finished_at,
       (extract(epoch FROM (r.finished_at - r.started_at)) * 1000)::bigint AS duration_ms,
       r.status, r.orgs_checked, r.drifted, r.repaired, r.lost_race, r.orphans_fixed,
       r.orphans_left, r.error, r.reverted_run_id, r.period_resets, r.ledger_mismatches,
       COALESCE(r.kind, CASE WHEN r.mode = 'revert' THEN 'revert' ELSE 'sweep' END) AS kind
  FROM reconciler.runs r
 ORDER BY r.started_at DESC
 LIMIT $1
