-- Remove some markers from the log, by row id (partition oid '/' ctid, as mark_changes.sql and
-- the TRUNCATE markers' query return them): a pass's insurance markers once its candidates
-- were settled, or the TRUNCATE markers a sweep covered. Only markers (counter_delta NULL;
-- with $4, only rows naming no organization) are removed, whatever the ids say.
-- $1 text[] row ids; $2 bigint lock key, $3 integer the backend holding it (fenced);
-- $4 boolean: TRUNCATE markers.
WITH ids AS (
  SELECT pg_catalog.split_part(i, '/', 1)::oid AS rel, pg_catalog.split_part(i, '/', 2)::tid AS row_id
    FROM unnest($1::text[]) AS i
)
DELETE FROM reconciler.changes c
 WHERE c.ctid = ANY (ARRAY(SELECT row_id FROM ids))
   AND (c.tableoid, c.ctid) IN (SELECT rel, row_id FROM ids)
   AND c.counter_delta IS NULL
   AND (NOT $4 OR c.organization_id IS NULL)
   AND (SELECT reconciler.holds_lock($2, $3))
