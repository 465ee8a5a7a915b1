-- Log a marker row for some organizations: the next incremental pass looks at them again
-- (after a rebuild of their totals, or while their drift is not repaired yet).
-- $1 uuid[]; $2 bigint lock key, $3 integer the backend holding it (fenced)
INSERT INTO reconciler.changes (organization_id)
SELECT DISTINCT u.id
  FROM unnest($1::uuid[]) AS u(id)
 WHERE (SELECT reconciler.holds_lock($2, $3))
