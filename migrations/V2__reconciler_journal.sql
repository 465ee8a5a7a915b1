-- V2: the reconciler's own schema: one row per pass, and a journal row for every correction.
--
-- Nothing here is exposed to the API roles: no grants to anon/authenticated, and RLS enabled
-- with no policy, so even a mistaken grant reads nothing. New tables only: no lock on any
-- application table.

CREATE SCHEMA IF NOT EXISTS reconciler;
REVOKE ALL ON SCHEMA reconciler FROM PUBLIC;
COMMENT ON SCHEMA reconciler IS 'synqall-reconciler: passes and the journal of every correction.';

CREATE TABLE IF NOT EXISTS reconciler.runs (
  id              uuid PRIMARY KEY,
  mode            text NOT NULL CHECK (mode IN ('daemon', 'once', 'demo')),
  version         text NOT NULL,
  host            text NOT NULL,
  period          text NOT NULL,
  source          text NOT NULL,
  started_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
  finished_at     timestamptz,
  status          text NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'ok', 'failed', 'cancelled')),
  orgs_checked    integer,
  drifted         integer,
  repaired        integer,
  lost_race       integer,
  orphans_fixed   integer,
  orphans_left    integer,
  error           text
);
CREATE INDEX IF NOT EXISTS runs_started_at_idx ON reconciler.runs (started_at DESC);

-- One row per counter correction, committed in the same transaction as the UPDATE it records.
CREATE TABLE IF NOT EXISTS reconciler.adjustments (
  id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id           uuid NOT NULL REFERENCES reconciler.runs (id),
  organization_id  uuid NOT NULL,
  old_used_minutes integer,
  new_used_minutes integer NOT NULL,
  calls_minutes    bigint NOT NULL,
  metrics_minutes  bigint NOT NULL,
  period           text NOT NULL,
  period_start     timestamptz,
  reason           text NOT NULL,
  created_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX IF NOT EXISTS adjustments_run_idx ON reconciler.adjustments (run_id);
CREATE INDEX IF NOT EXISTS adjustments_org_idx ON reconciler.adjustments (organization_id, created_at);

-- One row per orphaned call attributed to an organization.
CREATE TABLE IF NOT EXISTS reconciler.call_repairs (
  id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  run_id              uuid NOT NULL REFERENCES reconciler.runs (id),
  call_id             uuid NOT NULL,
  user_id             uuid,
  old_organization_id uuid,
  new_organization_id uuid NOT NULL,
  rule                text NOT NULL
                      CHECK (rule IN ('only_membership', 'membership_at_call_time', 'earliest_membership')),
  created_at          timestamptz NOT NULL DEFAULT pg_catalog.now()
);
CREATE INDEX IF NOT EXISTS call_repairs_run_idx ON reconciler.call_repairs (run_id);
CREATE INDEX IF NOT EXISTS call_repairs_call_idx ON reconciler.call_repairs (call_id);

ALTER TABLE reconciler.runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE reconciler.adjustments ENABLE ROW LEVEL SECURITY;
ALTER TABLE reconciler.call_repairs ENABLE ROW LEVEL SECURITY;
ALTER TABLE reconciler.schema_migrations ENABLE ROW LEVEL SECURITY;

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['anon', 'authenticated'] LOOP
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA reconciler FROM %I', r);
      EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA reconciler FROM %I', r);
    END IF;
  END LOOP;
END
$$;
