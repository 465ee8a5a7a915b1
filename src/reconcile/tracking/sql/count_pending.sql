-- How many log rows naming an organization are pending in this snapshot: those a sweep's
-- consumption takes. The first query of the consuming transaction (it takes the snapshot).
SELECT count(*) AS pending FROM reconciler.pending_changes WHERE organization_id IS NOT NULL
