-- V1: the incident's fix (seed/usage-tracking-fix.md, step 2), made safe.
--
-- Re-runnable, and applies cleanly both where the seed's SQL was already run by hand (the
-- production state) and where it never was. Differences from the seed, and why:
--   * The column is added only if missing, without touching the table otherwise: ALTER TABLE
--     takes an ACCESS EXCLUSIVE lock even when IF NOT EXISTS makes it a no-op.
--   * increment_used_minutes is SECURITY DEFINER with `SET search_path = ''` and fully qualified
--     names: the seed's version resolved `organizations` through the caller's search_path, so a
--     caller could shadow the table or the operators it uses.
--   * It rejects NULL, zero and negative minutes (the seed let any caller subtract usage) and
--     unknown organizations (the seed silently updated nothing).
--   * EXECUTE is revoked from PUBLIC (functions are executable by everyone by default) and from
--     anon (Supabase's default privileges grant it on every function in public). authenticated
--     may add only to an organization it is a member of, by auth.uid(); service_role to any.
--   * No index on used_minutes: nothing reads by it, and it turns every increment into a
--     non-HOT update. `doctor` reports the seed's index if it exists (drop it CONCURRENTLY).
--   * No backfill: the reconciler computes and journals the correct values itself.

DO $$
BEGIN
  IF NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_attribute
    WHERE attrelid = 'public.organizations'::regclass
      AND attname = 'used_minutes' AND NOT attisdropped
  ) THEN
    -- A constant default is metadata-only since PostgreSQL 11: no table rewrite.
    ALTER TABLE public.organizations ADD COLUMN used_minutes integer DEFAULT 0;
  END IF;
END
$$;

COMMENT ON COLUMN public.organizations.used_minutes IS
  'Minutes used in the billing period. Incremented by increment_used_minutes(); verified and repaired by synqall-reconciler (journal: reconciler.adjustments).';

CREATE OR REPLACE FUNCTION public.increment_used_minutes(org_id uuid, minutes_to_add integer)
RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $fn$
DECLARE
  -- The role the caller is acting as. Inside SECURITY DEFINER current_user is the owner, so
  -- look at the role set with SET ROLE (how PostgREST switches to anon/authenticated/
  -- service_role), falling back to the login role.
  caller text := COALESCE(NULLIF(pg_catalog.current_setting('role', true), 'none'),
                          session_user::text);
  privileged boolean;
BEGIN
  IF org_id IS NULL THEN
    RAISE EXCEPTION 'increment_used_minutes: org_id must not be NULL'
      USING ERRCODE = '22004';
  END IF;
  IF minutes_to_add IS NULL OR minutes_to_add <= 0 THEN
    RAISE EXCEPTION 'increment_used_minutes: minutes_to_add must be a positive integer, got %',
      COALESCE(minutes_to_add::text, 'NULL')
      USING ERRCODE = '22023';
  END IF;

  SELECT r.rolsuper OR r.rolbypassrls OR r.rolname = 'service_role'
    INTO privileged
    FROM pg_catalog.pg_roles r
   WHERE r.rolname = caller;

  IF NOT COALESCE(privileged, false) THEN
    -- Everyone else (authenticated) may add only to an organization they belong to.
    IF NOT EXISTS (
      SELECT 1 FROM public.user_organizations uo
       WHERE uo.organization_id = org_id
         AND uo.user_id = auth.uid()
    ) THEN
      RAISE EXCEPTION 'increment_used_minutes: not a member of organization %', org_id
        USING ERRCODE = '42501';
    END IF;
  END IF;

  UPDATE public.organizations o
     SET used_minutes = COALESCE(o.used_minutes, 0) + minutes_to_add,
         updated_at = pg_catalog.now()
   WHERE o.id = org_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'increment_used_minutes: unknown organization %', org_id
      USING ERRCODE = 'P0002';
  END IF;
END
$fn$;

COMMENT ON FUNCTION public.increment_used_minutes(uuid, integer) IS
  'Adds minutes_to_add (> 0) to an organization''s used_minutes. authenticated: own organizations only; service_role: any.';

-- CREATE OR REPLACE keeps the grants of an existing function (the seed's): reset them.
REVOKE ALL ON FUNCTION public.increment_used_minutes(uuid, integer) FROM PUBLIC;

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION public.increment_used_minutes(uuid, integer) FROM %I', r);
    END IF;
  END LOOP;
  FOREACH r IN ARRAY ARRAY['authenticated', 'service_role'] LOOP
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION public.increment_used_minutes(uuid, integer) TO %I', r);
    END IF;
  END LOOP;
END
$$;
