-- Lock the organizations about to be repaired and read their counters under the lock.
-- NO KEY UPDATE: the lock an UPDATE of a non-key column takes; unlike FOR UPDATE it does not
-- block the app inserting calls that reference these organizations.
-- SKIP LOCKED: an organization whose row is locked is being written right now (an increment in
-- flight); it is left to the next pass instead of waiting.
-- Template: {stored} and {stored_invalid} as in drifted_orgs.sql.
-- $1 uuid[]
SELECT o.id, {stored} AS stored, {stored_invalid} AS stored_invalid
  FROM public.organizations o
 WHERE o.id = ANY ($1)
 ORDER BY o.id
   FOR NO KEY UPDATE SKIP LOCKED
