-- V3: synqall_reconciler, the least-privilege role the daemon logs in through.
--
-- It can read the ledgers and memberships, and write exactly what a pass writes:
-- organizations.used_minutes/updated_at, calls.organization_id, and its own journal (append
-- only: adjustments and call_repairs cannot be updated or deleted by it). The application
-- tables have RLS on, so the role gets policies of its own instead of BYPASSRLS (which only a
-- superuser can grant, and which would also lift RLS on every other table).
--
-- The role is NOLOGIN: create a login that is a member of it (README, "Least privilege").

-- Roles are cluster-wide: another database of the same cluster may be migrating at the same
-- moment, so a concurrent creation is not an error.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'synqall_reconciler') THEN
    CREATE ROLE synqall_reconciler NOLOGIN;
  END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
  NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO synqall_reconciler;
GRANT SELECT ON public.organizations, public.calls, public.usage_metrics, public.user_organizations
  TO synqall_reconciler;
GRANT UPDATE (used_minutes, updated_at) ON public.organizations TO synqall_reconciler;
GRANT UPDATE (organization_id) ON public.calls TO synqall_reconciler;

GRANT USAGE ON SCHEMA reconciler TO synqall_reconciler;
GRANT SELECT ON reconciler.schema_migrations TO synqall_reconciler;
GRANT SELECT, INSERT ON reconciler.runs, reconciler.adjustments, reconciler.call_repairs
  TO synqall_reconciler;
GRANT UPDATE (finished_at, status, orgs_checked, drifted, repaired, lost_race, orphans_fixed,
              orphans_left, error)
  ON reconciler.runs TO synqall_reconciler;

-- Row-level security: policies for this role only. (PostgreSQL 15 has no CREATE POLICY IF NOT
-- EXISTS; drop-and-create keeps the migration re-runnable.)
DROP POLICY IF EXISTS synqall_reconciler_read ON public.organizations;
CREATE POLICY synqall_reconciler_read ON public.organizations
  FOR SELECT TO synqall_reconciler USING (true);
DROP POLICY IF EXISTS synqall_reconciler_write ON public.organizations;
CREATE POLICY synqall_reconciler_write ON public.organizations
  FOR UPDATE TO synqall_reconciler USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_read ON public.calls;
CREATE POLICY synqall_reconciler_read ON public.calls
  FOR SELECT TO synqall_reconciler USING (true);
DROP POLICY IF EXISTS synqall_reconciler_write ON public.calls;
CREATE POLICY synqall_reconciler_write ON public.calls
  FOR UPDATE TO synqall_reconciler USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_read ON public.usage_metrics;
CREATE POLICY synqall_reconciler_read ON public.usage_metrics
  FOR SELECT TO synqall_reconciler USING (true);
DROP POLICY IF EXISTS synqall_reconciler_read ON public.user_organizations;
CREATE POLICY synqall_reconciler_read ON public.user_organizations
  FOR SELECT TO synqall_reconciler USING (true);

DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.runs;
CREATE POLICY synqall_reconciler_all ON reconciler.runs
  TO synqall_reconciler USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_read ON reconciler.adjustments;
CREATE POLICY synqall_reconciler_read ON reconciler.adjustments
  FOR SELECT TO synqall_reconciler USING (true);
DROP POLICY IF EXISTS synqall_reconciler_append ON reconciler.adjustments;
CREATE POLICY synqall_reconciler_append ON reconciler.adjustments
  FOR INSERT TO synqall_reconciler WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_read ON reconciler.call_repairs;
CREATE POLICY synqall_reconciler_read ON reconciler.call_repairs
  FOR SELECT TO synqall_reconciler USING (true);
DROP POLICY IF EXISTS synqall_reconciler_append ON reconciler.call_repairs;
CREATE POLICY synqall_reconciler_append ON reconciler.call_repairs
  FOR INSERT TO synqall_reconciler WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_read ON reconciler.schema_migrations;
CREATE POLICY synqall_reconciler_read ON reconciler.schema_migrations
  FOR SELECT TO synqall_reconciler USING (true);

-- The orphaned-users check reads auth.users ids. On Supabase auth.users belongs to
-- supabase_auth_admin and this grant may be refused; the pass then skips that check.
DO $$
BEGIN
  IF to_regclass('auth.users') IS NOT NULL THEN
    BEGIN
      GRANT USAGE ON SCHEMA auth TO synqall_reconciler;
      GRANT SELECT (id) ON auth.users TO synqall_reconciler;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE NOTICE 'synqall_reconciler cannot be granted auth.users: the orphaned-users check will be skipped';
    END;
  END IF;
END
$$;
