-- Rebuild, step 1 of 2 (one REPEATABLE READ transaction with rebuild_build.sql, so the log
-- rows deleted here and the ledger rows read there belong to one snapshot): forget the totals
-- and the logged changes of some organizations. Changes logged by later transactions are not
-- visible, stay, and fold on top of the rebuilt totals.
-- Template: {org_filter} is `= ANY ($1::uuid[])` (some organizations) or `IS NOT NULL` (with
-- $1 empty) (all: the first build).
-- $1 uuid[]; $2 bigint lock key, $3 integer the backend holding it (fenced)
WITH may_write AS (
  SELECT reconciler.holds_lock($2, $3) AS ok
),
cleared_log AS (
  DELETE FROM reconciler.changes c
   WHERE (SELECT ok FROM may_write) AND (c.organization_id {org_filter} OR $4::boolean)
  RETURNING 1
),
cleared AS (
  DELETE FROM reconciler.ledger_totals lt
   WHERE (SELECT ok FROM may_write) AND lt.organization_id {org_filter}
  RETURNING 1
)
SELECT (SELECT ok FROM may_write) AS held,
       (SELECT count(*) FROM cleared_log) AS log_rows,
       (SELECT count(*) FROM cleared) AS totals_rows
