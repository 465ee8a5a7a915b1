-- Close the revert's run row. Counts: repaired = counters restored, orphans_fixed =
-- attributions restored, lost_race = items skipped because they changed after the run.
-- $1 id, $2 counters restored, $3 attributions restored, $4 skipped; fenced: only while
-- backend $6 holds lock $5
UPDATE reconciler.runs
   SET finished_at = pg_catalog.now(), status = 'ok', repaired = $2, orphans_fixed = $3,
       lost_race = $4, drifted = 0, orphans_left = 0
 WHERE id = $1
   AND (SELECT reconciler.holds_lock($5, $6))
