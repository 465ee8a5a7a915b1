-- Put attributions back (organization_id as before the run, normally NULL), compare-and-set
-- on the organization the run wrote, journalled in call_repairs with rule 'revert'.
-- $1 bigint[] call_repairs ids, $2 uuid: the revert's own run id; fenced: only while backend
-- $4 holds lock $3
WITH restored AS (
  UPDATE public.calls c
     SET organization_id = cr.old_organization_id
    FROM reconciler.call_repairs cr
   WHERE cr.id = ANY ($1::bigint[])
     AND c.id = cr.call_id
     AND c.organization_id IS NOT DISTINCT FROM cr.new_organization_id
     AND (SELECT reconciler.holds_lock($3, $4))
  RETURNING cr.id, cr.call_id, cr.user_id, cr.old_organization_id, cr.new_organization_id
)
INSERT INTO reconciler.call_repairs
       (run_id, call_id, user_id, old_organization_id, new_organization_id, rule,
        reverts_call_repair_id)
SELECT $2, r.call_id, r.user_id, r.new_organization_id, r.old_organization_id, 'revert', r.id
  FROM restored r
RETURNING reverts_call_repair_id
