-- A sweep covered every organization: incremental passes may rely on the change log from now on.
-- $1 uuid run id; $2 bigint lock key, $3 integer the backend holding it (fenced)
UPDATE reconciler.tracking
   SET initialized_at = pg_catalog.now(), initialized_run_id = $1
 WHERE (SELECT reconciler.holds_lock($2, $3))
