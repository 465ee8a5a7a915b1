-- The revert's own run row, opened and closed inside the revert's transaction (a revert that
-- restores nothing leaves no row). $1 id, $2 version, $3 host, $4 period, $5 source,
-- $6 reverted run id; fenced: only while backend $8 holds lock $7
INSERT INTO reconciler.runs (id, mode, version, host, period, source, status, reverted_run_id)
SELECT $1, 'revert', $2, $3, $4, $5, 'running', $6
 WHERE (SELECT reconciler.holds_lock($7, $8))
