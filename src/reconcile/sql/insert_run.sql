-- Open the row of a pass (fenced: only while backend $8 holds lock $7).
-- $1 id, $2 mode, $3 version, $4 host, $5 period, $6 source, $7 lock key, $8 lock backend pid,
-- $9 kind ('sweep' or 'incremental')
INSERT INTO reconciler.runs (id, mode, version, host, period, source, status, kind)
SELECT $1, $2, $3, $4, $5, $6, 'running', $9
 WHERE (SELECT reconciler.holds_lock($7, $8))
