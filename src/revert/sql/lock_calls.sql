-- Lock the calls the run attributed, in a stable order. $1 uuid: the reverted run
SELECT 1 FROM public.calls c
 WHERE c.id IN (SELECT cr.call_id FROM reconciler.call_repairs cr WHERE cr.run_id = $1)
 ORDER BY c.id
   FOR UPDATE OF c;
