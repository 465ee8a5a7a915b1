-- Every counter the run changed, with what is there now and whatever stands in the way of
-- restoring it. Read under the row locks of lock_orgs.sql. $1 uuid: the reverted run
SELECT a.id, a.organization_id, o.name, a.old_used_minutes, a.new_used_minutes,
       o.id IS NOT NULL AS org_exists,
       o.used_minutes::text AS current,
       (SELECT r.run_id FROM reconciler.adjustments r
         WHERE r.reverts_adjustment_id = a.id) AS reverted_by,
       -- A later correction of the same counter that still stands (not itself a revert, and
       -- not reverted): undoing this run's value now would discard it.
       (SELECT l.run_id FROM reconciler.adjustments l
         WHERE l.organization_id = a.organization_id
           AND l.id > a.id
           AND l.reverts_adjustment_id IS NULL
           AND NOT EXISTS (SELECT 1 FROM reconciler.adjustments x
                            WHERE x.reverts_adjustment_id = l.id)
         ORDER BY l.id
         LIMIT 1) AS corrected_later_by
  FROM reconciler.adjustments a
  LEFT JOIN public.organizations o ON o.id = a.organization_id
 WHERE a.run_id = $1
   AND a.reverts_adjustment_id IS NULL
 ORDER BY a.id
