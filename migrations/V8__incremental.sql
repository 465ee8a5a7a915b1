-- V8: incremental passes (docs/design.md, "Cost follows activity").
--
-- * reconciler.changes: an append-only log, written by statement-level triggers on calls,
--   usage_metrics and organizations in the same transaction as the change: one row per
--   organization and month a statement touched, with what it added to or removed from each
--   ledger (per-call rounded minutes three ways, raw usage_metrics minutes), or with how far it
--   moved the counter (counter_delta), or a marker (counter_delta NULL: "look at it") when
--   the counter moved from or to something that is not a number, or an organization appeared
--   or went. No key, no index: application transactions never wait on each other here. A
--   TRUNCATE logs a row without organization: "unknown, sweep everything". The reconciler
--   consumes the log every pass (docs/design.md, "Cost follows activity").
-- * reconciler.tracking: one row: whether a sweep has covered every organization since the
--   triggers exist (incremental passes rely on that), and a random id that a replica must show
--   too (database.replica_url is the same database).
-- * reconciler.runs.kind ('sweep' or 'incremental') and billed_minutes (the mass-correction
--   guard of an incremental pass measures against the latest sweep's totals).
--
-- The triggers run as the owner of this migration (SECURITY DEFINER, empty search_path), so
-- the application's roles need no privilege on schema reconciler. They reference only columns
-- the reconciler already requires; the migration refuses to install them otherwise.

CREATE TABLE IF NOT EXISTS reconciler.changes (
  organization_id uuid,
  month           date,
  calls_ceil      numeric NOT NULL DEFAULT 0,
  calls_round     numeric NOT NULL DEFAULT 0,
  calls_floor     numeric NOT NULL DEFAULT 0,
  metrics_raw     numeric NOT NULL DEFAULT 0,
  counter_delta   numeric,
  logged_at       timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE reconciler.changes IS
  'Ledger and counter changes since the last reconcile pass; written by triggers, read and consumed by synqall-reconciler.';

CREATE TABLE IF NOT EXISTS reconciler.tracking (
  singleton          boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  database_id        uuid NOT NULL DEFAULT gen_random_uuid(),
  initialized_at     timestamptz,
  initialized_run_id uuid
);
INSERT INTO reconciler.tracking DEFAULT VALUES ON CONFLICT DO NOTHING;

ALTER TABLE reconciler.runs
  ADD COLUMN IF NOT EXISTS kind text,
  ADD COLUMN IF NOT EXISTS billed_minutes bigint;
ALTER TABLE reconciler.runs DROP CONSTRAINT IF EXISTS runs_kind_check;
ALTER TABLE reconciler.runs
  ADD CONSTRAINT runs_kind_check CHECK (kind IS NULL OR kind IN ('sweep', 'incremental'));
GRANT UPDATE (billed_minutes) ON reconciler.runs TO synqall_reconciler;

ALTER TABLE reconciler.changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE reconciler.tracking ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON reconciler.changes, reconciler.tracking FROM PUBLIC;
-- TRUNCATE: the log is emptied under its table lock when that lock is free at once.
GRANT SELECT, INSERT, DELETE, TRUNCATE ON reconciler.changes TO synqall_reconciler;
GRANT SELECT, UPDATE (initialized_at, initialized_run_id) ON reconciler.tracking
  TO synqall_reconciler;
DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.changes;
CREATE POLICY synqall_reconciler_all ON reconciler.changes
  TO synqall_reconciler USING (true) WITH CHECK (true);
DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.tracking;
CREATE POLICY synqall_reconciler_all ON reconciler.tracking
  TO synqall_reconciler USING (true) WITH CHECK (true);

-- What one row adds to its organization's ledger, as the pass counts it (the triggers'). Plain SQL expressions (inlined by the planner):
-- no search_path of their own is needed, every name is qualified.
--
-- A call counts when completed, with a duration that is a number of minutes (not NULL,
-- negative, NaN, infinite or beyond bigint); the pass rounds it per call (usage.rounding), so
-- the log carries the three roundings.
CREATE OR REPLACE FUNCTION reconciler.call_minutes(status text, duration numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
  SELECT CASE WHEN status OPERATOR(pg_catalog.=) 'completed'
               AND duration OPERATOR(pg_catalog.>=) 0
               AND duration OPERATOR(pg_catalog.<=) 9223372036854775807
              THEN duration END
$fn$;

-- A minutes_transcribed row counts with its raw value (the pass rounds the total), unless the
-- value is NaN, infinite or beyond bigint.
CREATE OR REPLACE FUNCTION reconciler.metric_minutes(metric_type text, value numeric)
RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
  SELECT CASE WHEN metric_type OPERATOR(pg_catalog.=) 'minutes_transcribed'
               AND value OPERATOR(pg_catalog.>=) -9223372036854775807
               AND value OPERATOR(pg_catalog.<=) 9223372036854775807
              THEN value END
$fn$;

-- The UTC month a row belongs to (calendar_month periods start at UTC midnight on the 1st);
-- '-infinity' for a row without created_at, which only all_time counts.
CREATE OR REPLACE FUNCTION reconciler.ledger_month(created_at timestamptz)
RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
  SELECT COALESCE(pg_catalog.date_trunc('month', created_at AT TIME ZONE 'UTC')::date,
                  '-infinity'::date)
$fn$;

-- Triggers on calls: per statement, the change of each organization's ledger per month.
CREATE OR REPLACE FUNCTION reconciler.changes_from_calls()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO reconciler.changes (organization_id, month, calls_ceil, calls_round, calls_floor,
                                    counter_delta)
    SELECT r.organization_id, r.month, sum(pg_catalog.ceil(r.d)), sum(pg_catalog.round(r.d)),
           sum(pg_catalog.floor(r.d)), 0
      FROM (SELECT n.organization_id, reconciler.ledger_month(n.created_at::timestamptz) AS month,
                   reconciler.call_minutes(n.status::text, n.duration_minutes::numeric) AS d
              FROM new_rows n) r
     WHERE r.organization_id IS NOT NULL AND r.d IS NOT NULL
     GROUP BY r.organization_id, r.month;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO reconciler.changes (organization_id, month, calls_ceil, calls_round, calls_floor,
                                    counter_delta)
    SELECT r.organization_id, r.month, sum(r.sign * pg_catalog.ceil(r.d)),
           sum(r.sign * pg_catalog.round(r.d)), sum(r.sign * pg_catalog.floor(r.d)), 0
      FROM (SELECT o.organization_id, reconciler.ledger_month(o.created_at::timestamptz) AS month,
                   reconciler.call_minutes(o.status::text, o.duration_minutes::numeric) AS d,
                   -1 AS sign
              FROM old_rows o
            UNION ALL
            SELECT n.organization_id, reconciler.ledger_month(n.created_at::timestamptz),
                   reconciler.call_minutes(n.status::text, n.duration_minutes::numeric), 1
              FROM new_rows n) r
     WHERE r.organization_id IS NOT NULL AND r.d IS NOT NULL
     GROUP BY r.organization_id, r.month
    HAVING sum(r.sign * pg_catalog.ceil(r.d)) <> 0 OR sum(r.sign * pg_catalog.round(r.d)) <> 0
        OR sum(r.sign * pg_catalog.floor(r.d)) <> 0;
  ELSE
    INSERT INTO reconciler.changes (organization_id, month, calls_ceil, calls_round, calls_floor,
                                    counter_delta)
    SELECT r.organization_id, r.month, -sum(pg_catalog.ceil(r.d)), -sum(pg_catalog.round(r.d)),
           -sum(pg_catalog.floor(r.d)), 0
      FROM (SELECT o.organization_id, reconciler.ledger_month(o.created_at::timestamptz) AS month,
                   reconciler.call_minutes(o.status::text, o.duration_minutes::numeric) AS d
              FROM old_rows o) r
     WHERE r.organization_id IS NOT NULL AND r.d IS NOT NULL
     GROUP BY r.organization_id, r.month;
  END IF;
  RETURN NULL;
END
$fn$;

-- Triggers on usage_metrics: the same for minutes_transcribed rows.
CREATE OR REPLACE FUNCTION reconciler.changes_from_usage_metrics()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO reconciler.changes (organization_id, month, metrics_raw, counter_delta)
    SELECT r.organization_id, r.month, sum(r.v), 0
      FROM (SELECT n.organization_id, reconciler.ledger_month(n.created_at::timestamptz) AS month,
                   reconciler.metric_minutes(n.metric_type::text, n.metric_value::numeric) AS v
              FROM new_rows n) r
     WHERE r.organization_id IS NOT NULL AND r.v IS NOT NULL
     GROUP BY r.organization_id, r.month;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO reconciler.changes (organization_id, month, metrics_raw, counter_delta)
    SELECT r.organization_id, r.month, sum(r.sign * r.v), 0
      FROM (SELECT o.organization_id, reconciler.ledger_month(o.created_at::timestamptz) AS month,
                   reconciler.metric_minutes(o.metric_type::text, o.metric_value::numeric) AS v,
                   -1 AS sign
              FROM old_rows o
            UNION ALL
            SELECT n.organization_id, reconciler.ledger_month(n.created_at::timestamptz),
                   reconciler.metric_minutes(n.metric_type::text, n.metric_value::numeric), 1
              FROM new_rows n) r
     WHERE r.organization_id IS NOT NULL AND r.v IS NOT NULL
     GROUP BY r.organization_id, r.month
    HAVING sum(r.sign * r.v) <> 0;
  ELSE
    INSERT INTO reconciler.changes (organization_id, month, metrics_raw, counter_delta)
    SELECT r.organization_id, r.month, -sum(r.v), 0
      FROM (SELECT o.organization_id, reconciler.ledger_month(o.created_at::timestamptz) AS month,
                   reconciler.metric_minutes(o.metric_type::text, o.metric_value::numeric) AS v
              FROM old_rows o) r
     WHERE r.organization_id IS NOT NULL AND r.v IS NOT NULL
     GROUP BY r.organization_id, r.month;
  END IF;
  RETURN NULL;
END
$fn$;

-- A counter that moved (the app's increment, a hand edit, a repair): by how much. One set from
-- or to NULL or a non-number, or an organization that appeared or went: a marker
-- (counter_delta NULL), so the next incremental pass re-reads it.
CREATE OR REPLACE FUNCTION reconciler.changes_from_organizations()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
  -- The reconciler's own repairs leave the organization in sync (confirmed under the row
  -- lock): not logged, or the next pass would re-read every repaired organization. Only the
  -- reconciler's login can ask for that (a setting alone is anyone's).
  IF TG_OP = 'UPDATE'
     AND pg_catalog.current_setting('synqall_reconciler.repairing', true) = 'on'
     AND pg_catalog.pg_has_role(session_user, 'synqall_reconciler', 'MEMBER') THEN
    RETURN NULL;
  END IF;
  IF TG_OP = 'UPDATE' THEN
    INSERT INTO reconciler.changes (organization_id, counter_delta)
    SELECT n.id,
           CASE WHEN d.v IN ('NaN', 'Infinity', '-Infinity') THEN NULL ELSE d.v END
      FROM new_rows n
      LEFT JOIN old_rows o ON o.id = n.id
     CROSS JOIN LATERAL (SELECT n.used_minutes::numeric - o.used_minutes::numeric AS v) d
     WHERE o.id IS NULL OR o.used_minutes IS DISTINCT FROM n.used_minutes;
  ELSIF TG_OP = 'INSERT' THEN
    INSERT INTO reconciler.changes (organization_id) SELECT n.id FROM new_rows n;
  ELSE
    INSERT INTO reconciler.changes (organization_id) SELECT o.id FROM old_rows o;
  END IF;
  RETURN NULL;
END
$fn$;

-- TRUNCATE has no rows to name: "unknown organizations", the next pass sweeps.
CREATE OR REPLACE FUNCTION reconciler.changes_truncated()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $fn$
BEGIN
  INSERT INTO reconciler.changes (organization_id) VALUES (NULL);
  RETURN NULL;
END
$fn$;

REVOKE ALL ON FUNCTION reconciler.changes_from_calls(), reconciler.changes_from_usage_metrics(),
  reconciler.changes_from_organizations(), reconciler.changes_truncated() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION reconciler.call_minutes(text, numeric),
  reconciler.metric_minutes(text, numeric), reconciler.ledger_month(timestamptz)
  TO synqall_reconciler;

-- The columns the trigger functions read must exist (they are the ones the reconciler
-- requires); a trigger that failed would fail the application's own statement.
DO $$
DECLARE
  missing text;
BEGIN
  SELECT string_agg(format('%s.%s', t, c), ', ') INTO missing
    FROM (VALUES ('calls', 'organization_id'), ('calls', 'status'),
                 ('calls', 'duration_minutes'), ('calls', 'created_at'),
                 ('usage_metrics', 'organization_id'), ('usage_metrics', 'metric_type'),
                 ('usage_metrics', 'metric_value'), ('usage_metrics', 'created_at'),
                 ('organizations', 'id'), ('organizations', 'used_minutes')) AS need(t, c)
   WHERE NOT EXISTS (SELECT 1 FROM information_schema.columns ic
                      WHERE ic.table_schema = 'public' AND ic.table_name = need.t
                        AND ic.column_name = need.c);
  IF missing IS NOT NULL THEN
    RAISE EXCEPTION 'the change-tracking triggers need column(s) %', missing;
  END IF;
END
$$;

DROP TRIGGER IF EXISTS synqall_reconciler_insert ON public.calls;
CREATE TRIGGER synqall_reconciler_insert AFTER INSERT ON public.calls
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_calls();
DROP TRIGGER IF EXISTS synqall_reconciler_update ON public.calls;
CREATE TRIGGER synqall_reconciler_update AFTER UPDATE ON public.calls
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_calls();
DROP TRIGGER IF EXISTS synqall_reconciler_delete ON public.calls;
CREATE TRIGGER synqall_reconciler_delete AFTER DELETE ON public.calls
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_calls();
DROP TRIGGER IF EXISTS synqall_reconciler_truncate ON public.calls;
CREATE TRIGGER synqall_reconciler_truncate AFTER TRUNCATE ON public.calls
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_truncated();

DROP TRIGGER IF EXISTS synqall_reconciler_insert ON public.usage_metrics;
CREATE TRIGGER synqall_reconciler_insert AFTER INSERT ON public.usage_metrics
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_usage_metrics();
DROP TRIGGER IF EXISTS synqall_reconciler_update ON public.usage_metrics;
CREATE TRIGGER synqall_reconciler_update AFTER UPDATE ON public.usage_metrics
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_usage_metrics();
DROP TRIGGER IF EXISTS synqall_reconciler_delete ON public.usage_metrics;
CREATE TRIGGER synqall_reconciler_delete AFTER DELETE ON public.usage_metrics
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_usage_metrics();
DROP TRIGGER IF EXISTS synqall_reconciler_truncate ON public.usage_metrics;
CREATE TRIGGER synqall_reconciler_truncate AFTER TRUNCATE ON public.usage_metrics
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_truncated();

DROP TRIGGER IF EXISTS synqall_reconciler_update ON public.organizations;
CREATE TRIGGER synqall_reconciler_update AFTER UPDATE ON public.organizations
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_organizations();
DROP TRIGGER IF EXISTS synqall_reconciler_insert ON public.organizations;
CREATE TRIGGER synqall_reconciler_insert AFTER INSERT ON public.organizations
  REFERENCING NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_organizations();
DROP TRIGGER IF EXISTS synqall_reconciler_delete ON public.organizations;
CREATE TRIGGER synqall_reconciler_delete AFTER DELETE ON public.organizations
  REFERENCING OLD TABLE AS old_rows
  FOR EACH STATEMENT EXECUTE FUNCTION reconciler.changes_from_organizations();
