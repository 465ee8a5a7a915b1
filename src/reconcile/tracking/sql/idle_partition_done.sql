-- Whether the idle partition may be emptied after a sweep recorded snapshot $1 (text): none of
-- its rows is one that snapshot did not see, and none is a TRUNCATE marker (the sweep removes
-- those itself once it covered them). Run under the partition's ACCESS EXCLUSIVE lock, in a
-- READ COMMITTED statement snapshot taken after it: no writer of the partition is in flight,
-- every row it holds is visible here.
-- {partition}: reconciler.changes_0 or reconciler.changes_1.
SELECT NOT EXISTS (
  SELECT 1 FROM {partition} ch
   WHERE ch.organization_id IS NULL
      OR NOT pg_catalog.pg_visible_in_snapshot(ch.xid, $1::text::pg_snapshot)
) AS done
