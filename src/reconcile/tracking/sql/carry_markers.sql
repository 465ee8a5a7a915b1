-- Before a partition of the log is emptied: its TRUNCATE markers (rows naming no
-- organization) go on, in the active partition, until a sweep settles them.
-- {partition}: reconciler.changes_0 or reconciler.changes_1.
INSERT INTO reconciler.changes (organization_id, logged_at)
SELECT NULL, m.logged_at FROM {partition} m WHERE m.organization_id IS NULL
