-- How many pending log rows naming an organization the snapshot $1 (text) saw: those a
-- sweep's consumption takes.
SELECT count(*) FROM reconciler.pending_changes ch
 WHERE ch.organization_id IS NOT NULL
   AND pg_catalog.pg_visible_in_snapshot(ch.xid, $1::text::pg_snapshot)
