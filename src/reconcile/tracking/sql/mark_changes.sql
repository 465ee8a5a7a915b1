-- Log a marker row (counter_delta NULL: "look at it") for some organizations: the next
-- incremental pass re-reads them exactly (while their drift is not repaired yet, or as the
-- insurance of a pass that may stop before it repairs them). Returns the markers' row ids.
-- $1 uuid[]; $2 bigint lock key, $3 integer the backend holding it (fenced)
INSERT INTO reconciler.changes (organization_id, counter_delta)
SELECT DISTINCT u.id, NULL::numeric
  FROM unnest($1::uuid[]) AS u(id)
 WHERE (SELECT reconciler.holds_lock($2, $3))
RETURNING tableoid::oid::text || '/' || ctid::text
