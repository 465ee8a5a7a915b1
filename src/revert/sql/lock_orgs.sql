-- Lock the organization rows the run changed, in a stable order (no deadlock with a
-- pass doing the same), waiting at most lock_timeout. $1 uuid: the reverted run
SELECT 1 FROM public.organizations o
 WHERE o.id IN (SELECT a.organization_id FROM reconciler.adjustments a WHERE a.run_id = $1)
 ORDER BY o.id
   FOR UPDATE OF o;
