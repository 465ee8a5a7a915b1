-- Close the row of a pass with its outcome and counts.
-- $1 id, $2 status, $3 orgs_checked, $4 drifted, $5 repaired, $6 lost_race, $7 orphans_fixed,
-- $8 orphans_left, $9 error, $10 period_resets, $11 failed, $12 refused, $15 ledger_mismatches,
-- $16 billed_minutes (a sweep's);
-- fenced: only while backend $14 holds lock $13
UPDATE reconciler.runs
   SET finished_at = pg_catalog.now(), status = $2, orgs_checked = $3, drifted = $4,
       repaired = $5, lost_race = $6, orphans_fixed = $7, orphans_left = $8, error = $9,
       period_resets = $10, failed = $11, refused = $12,
       ledger_mismatches = $15, billed_minutes = $16
 WHERE id = $1
   AND (SELECT reconciler.holds_lock($13, $14))
