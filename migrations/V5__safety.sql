-- V5: what the second release's safety rules need (docs/design.md, "Safety").
--
-- * Run outcomes that are not simply ok: 'partial' (drift found but not all of it repaired:
--   a repair failed, was refused or lost its race) and 'refused' (a mass correction that waits
--   for a person); the failed and refused counts beside lost_race.
-- * Counters of any integer type: the journal keeps old and new values as bigint.
-- * The orphaned-users check without USAGE on schema auth: a view owned by the migrating role
--   (on Supabase, postgres, which may read auth.users) exposing user ids only, granted to
--   synqall_reconciler. Where the migrating role cannot read auth.users, a WARNING says so and
--   the check stays skipped.
--
-- Only the reconciler's own objects change: no lock on any application table.

ALTER TABLE reconciler.runs
  ADD COLUMN IF NOT EXISTS failed integer,
  ADD COLUMN IF NOT EXISTS refused integer;
ALTER TABLE reconciler.runs DROP CONSTRAINT IF EXISTS runs_status_check;
ALTER TABLE reconciler.runs
  ADD CONSTRAINT runs_status_check
  CHECK (status IN ('running', 'ok', 'partial', 'refused', 'failed', 'cancelled'));
GRANT UPDATE (failed, refused) ON reconciler.runs TO synqall_reconciler;

ALTER TABLE reconciler.adjustments
  ALTER COLUMN old_used_minutes TYPE bigint,
  ALTER COLUMN new_used_minutes TYPE bigint;

DO $$
BEGIN
  IF pg_catalog.to_regclass('auth.users') IS NULL THEN
    RAISE NOTICE 'auth.users does not exist: the orphaned-users check will be skipped';
    RETURN;
  END IF;
  IF NOT pg_catalog.has_table_privilege('auth.users', 'SELECT') THEN
    RAISE WARNING '% may not read auth.users: reconciler.auth_user_ids not created, the orphaned-users check will be skipped (run migrate as a role that can read auth.users, e.g. postgres on Supabase)', current_user;
    RETURN;
  END IF;
  CREATE OR REPLACE VIEW reconciler.auth_user_ids AS SELECT u.id FROM auth.users u;
  COMMENT ON VIEW reconciler.auth_user_ids IS
    'User ids of auth.users for the orphaned-users check, read with the privileges of this view''s owner.';
  REVOKE ALL ON reconciler.auth_user_ids FROM PUBLIC;
  GRANT SELECT ON reconciler.auth_user_ids TO synqall_reconciler;
END
$$;
