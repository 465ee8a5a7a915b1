-- V6: one writer, provably (docs/design.md, "One writer").
--
-- * reconciler.lease: the holder of the session advisory lock renews a heartbeat here every
--   few seconds, with its backend pids; a standby that finds the heartbeat older than
--   lock.lease_seconds ends the holder's sessions and takes over.
-- * reconciler.holds_lock(key, pid): whether backend `pid` holds the session advisory lock
--   `key` right now. Every write statement of a pass carries it (fencing), so a paused
--   instance that resumes after another took over writes nothing.
--
-- Only the reconciler's own objects change: no lock on any application table.

CREATE TABLE IF NOT EXISTS reconciler.lease (
  lock_key     bigint PRIMARY KEY,
  instance     uuid NOT NULL,
  host         text NOT NULL,
  holder_pid   integer NOT NULL,
  pass_pid     integer,
  run_id       uuid,
  acquired_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
  heartbeat_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
  released_at  timestamptz
);
ALTER TABLE reconciler.lease ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON reconciler.lease FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE ON reconciler.lease TO synqall_reconciler;
DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.lease;
CREATE POLICY synqall_reconciler_all ON reconciler.lease
  TO synqall_reconciler USING (true) WITH CHECK (true);

-- pg_advisory_lock(bigint) shows in pg_locks as classid = high 32 bits, objid = low 32 bits,
-- objsubid = 1.
CREATE OR REPLACE FUNCTION reconciler.holds_lock(lock_key bigint, holder integer)
RETURNS boolean
LANGUAGE sql
STABLE
SET search_path = ''
AS $fn$
  SELECT EXISTS (
    SELECT 1
      FROM pg_catalog.pg_locks l
     WHERE l.locktype = 'advisory'
       AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                          WHERE d.datname = pg_catalog.current_database())
       AND l.classid = ((lock_key >> 32) & 4294967295)::oid
       AND l.objid = (lock_key & 4294967295)::oid
       AND l.objsubid = 1
       AND l.pid = holder
       AND l.granted
  )
$fn$;
COMMENT ON FUNCTION reconciler.holds_lock(bigint, integer) IS
  'Whether backend holder holds the session advisory lock lock_key now: the fence every write of a pass carries.';
REVOKE ALL ON FUNCTION reconciler.holds_lock(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reconciler.holds_lock(bigint, integer) TO synqall_reconciler;
