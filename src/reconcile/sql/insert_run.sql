-- Open the row of a pass. $1 id, $2 mode, $3 version, $4 host, $5 period, $6 source
INSERT INTO reconciler.runs (id, mode, version, host, period, source, status)
VALUES ($1, $2, $3, $4, $5, $6, 'running')
