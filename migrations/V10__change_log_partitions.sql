-- V10: the change log is consumed by a snapshot and emptied by TRUNCATE, not by DELETE
-- (docs/design.md, "Consuming the change log").
--
-- Until V9 a pass deleted every log row it had read: two buffer accesses per row (the scan,
-- then the delete of each tuple), WAL for each, and dead rows for autovacuum; at 1% of 100k
-- organizations active that was ~90% of an incremental pass's buffers. Now:
--
-- * Each row carries the id of the transaction that wrote it (xid). A pass consumes the rows
--   its REPEATABLE READ snapshot sees and records that snapshot in
--   reconciler.tracking.consumed_snapshot; the rows still pending are those that snapshot did
--   not see (pg_visible_in_snapshot): rows of transactions still in flight stay pending, as
--   the DELETE left them. Consuming writes one row, whatever the log holds.
-- * The log is two partitions; the app's triggers write to the active one
--   (reconciler.change_generation's last_value, read by the column default). After consuming,
--   a pass empties the other one with TRUNCATE, under an ACCESS EXCLUSIVE lock taken NOWAIT
--   before its snapshot: no writer of that partition is in flight, so every row in it was
--   consumed; then it makes that partition the active one. The app's inserts go to the other
--   partition meanwhile and never wait on that lock (an INSERT locks only the partition its
--   row goes to). A writer still in the partition (a long transaction) only postpones the
--   TRUNCATE to a later pass.
-- * reconciler.pending_changes: the rows the next pass consumes (and TRUNCATE markers).
--
-- The trigger functions are unchanged: they insert into reconciler.changes, now the
-- partitioned table. Re-runnable: a log that is already partitioned is left as it is.

CREATE SEQUENCE IF NOT EXISTS reconciler.change_generation
  AS smallint MINVALUE 0 MAXVALUE 1 START 0;
COMMENT ON SEQUENCE reconciler.change_generation IS
  'Which partition of reconciler.changes the triggers write to (last_value); switched by synqall-reconciler after it emptied the other one.';

-- The partition a new log row goes to. Not STABLE: a pass may switch it at any moment, and
-- either partition is correct (consumption is by snapshot, not by partition). PL/pgSQL, not
-- SQL: a column default's SQL function is parsed and planned again at every statement, which
-- cost each app write ~60 µs (measured with pgbench); PL/pgSQL keeps the plan for the session.
CREATE OR REPLACE FUNCTION reconciler.active_change_partition()
RETURNS smallint
LANGUAGE plpgsql VOLATILE PARALLEL SAFE
AS $fn$
BEGIN
  RETURN (SELECT s.last_value::smallint FROM reconciler.change_generation s);
END
$fn$;
REVOKE ALL ON FUNCTION reconciler.active_change_partition() FROM PUBLIC;

DO $$
BEGIN
  IF (SELECT c.relkind FROM pg_catalog.pg_class c
        JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'reconciler' AND c.relname = 'changes') = 'p' THEN
    RETURN;
  END IF;
  ALTER TABLE reconciler.changes RENAME TO changes_v8;
  CREATE TABLE reconciler.changes (
    organization_id uuid,
    month           date,
    calls_ceil      numeric NOT NULL DEFAULT 0,
    calls_round     numeric NOT NULL DEFAULT 0,
    calls_floor     numeric NOT NULL DEFAULT 0,
    metrics_raw     numeric NOT NULL DEFAULT 0,
    counter_delta   numeric,
    logged_at       timestamptz NOT NULL DEFAULT pg_catalog.now(),
    xid             xid8 NOT NULL DEFAULT pg_catalog.pg_current_xact_id(),
    generation      smallint NOT NULL DEFAULT reconciler.active_change_partition()
  ) PARTITION BY LIST (generation);
  CREATE TABLE reconciler.changes_0 PARTITION OF reconciler.changes FOR VALUES IN (0);
  CREATE TABLE reconciler.changes_1 PARTITION OF reconciler.changes FOR VALUES IN (1);
  -- The rows V8 had not consumed yet stay pending (no snapshot is recorded yet).
  INSERT INTO reconciler.changes (organization_id, month, calls_ceil, calls_round, calls_floor,
                                  metrics_raw, counter_delta, logged_at)
  SELECT organization_id, month, calls_ceil, calls_round, calls_floor, metrics_raw,
         counter_delta, logged_at
    FROM reconciler.changes_v8;
  DROP TABLE reconciler.changes_v8;
END
$$;

COMMENT ON TABLE reconciler.changes IS
  'Ledger and counter changes, written by triggers; consumed by synqall-reconciler by snapshot (reconciler.tracking.consumed_snapshot), emptied one partition at a time by TRUNCATE.';

ALTER TABLE reconciler.tracking ADD COLUMN IF NOT EXISTS consumed_snapshot pg_snapshot;
COMMENT ON COLUMN reconciler.tracking.consumed_snapshot IS
  'The snapshot of the latest pass that consumed the change log: rows it saw are consumed.';
GRANT UPDATE (consumed_snapshot) ON reconciler.tracking TO synqall_reconciler;

ALTER TABLE reconciler.changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE reconciler.changes_0 ENABLE ROW LEVEL SECURITY;
ALTER TABLE reconciler.changes_1 ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON reconciler.changes, reconciler.changes_0, reconciler.changes_1 FROM PUBLIC;
REVOKE ALL ON SEQUENCE reconciler.change_generation FROM PUBLIC;
-- DELETE: a pass takes its own markers out again; TRUNCATE (and with it LOCK … ACCESS
-- EXCLUSIVE) on the partitions: the emptying.
GRANT SELECT, INSERT, DELETE ON reconciler.changes TO synqall_reconciler;
GRANT SELECT, DELETE, TRUNCATE ON reconciler.changes_0, reconciler.changes_1
  TO synqall_reconciler;
-- UPDATE: setval, the switch.
GRANT SELECT, UPDATE ON SEQUENCE reconciler.change_generation TO synqall_reconciler;
GRANT EXECUTE ON FUNCTION reconciler.active_change_partition() TO synqall_reconciler;
DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.changes;
CREATE POLICY synqall_reconciler_all ON reconciler.changes
  TO synqall_reconciler USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.changes_0;
CREATE POLICY synqall_reconciler_all ON reconciler.changes_0
  TO synqall_reconciler USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.changes_1;
CREATE POLICY synqall_reconciler_all ON reconciler.changes_1
  TO synqall_reconciler USING (true) WITH CHECK (true);

-- What the next pass consumes: rows the latest consuming snapshot did not see, and every
-- TRUNCATE marker (a sweep settles those). With the caller's privileges (security_invoker).
CREATE OR REPLACE VIEW reconciler.pending_changes WITH (security_invoker = true) AS
SELECT ch.*
  FROM reconciler.changes ch
 CROSS JOIN reconciler.tracking t
 WHERE ch.organization_id IS NULL
    OR t.consumed_snapshot IS NULL
    OR NOT pg_catalog.pg_visible_in_snapshot(ch.xid, t.consumed_snapshot);
REVOKE ALL ON reconciler.pending_changes FROM PUBLIC;
GRANT SELECT ON reconciler.pending_changes TO synqall_reconciler;
