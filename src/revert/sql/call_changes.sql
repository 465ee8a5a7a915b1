-- Every call the run attributed, with its organization now and whether a revert already
-- undid it. Read under the row locks of lock_calls.sql. $1 uuid: the reverted run
SELECT cr.id, cr.call_id, cr.old_organization_id, cr.new_organization_id,
       c.id IS NOT NULL AS call_exists,
       c.organization_id AS current,
       (SELECT r.run_id FROM reconciler.call_repairs r
         WHERE r.reverts_call_repair_id = cr.id) AS reverted_by
  FROM reconciler.call_repairs cr
  LEFT JOIN public.calls c ON c.id = cr.call_id
 WHERE cr.run_id = $1
   AND cr.reverts_call_repair_id IS NULL
 ORDER BY cr.id
