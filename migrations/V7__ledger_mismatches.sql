-- V7: ledger mismatches as state (docs/design.md, "Ledger mismatches").
--
-- A mismatch (an organization whose calls and usage_metrics ledgers disagree) is not a
-- correction: the reconciler never picks a side. It used to be logged by every pass; now each
-- pass keeps the current set here (batch by batch, fenced on the advisory lock, writing only
-- what changed) and logs only what appeared, changed or resolved.
--
-- Only the reconciler's own objects change.

CREATE TABLE IF NOT EXISTS reconciler.ledger_mismatches (
  organization_id uuid PRIMARY KEY,
  calls_minutes   bigint NOT NULL,
  metrics_minutes bigint NOT NULL,
  first_seen_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
  changed_at      timestamptz NOT NULL DEFAULT pg_catalog.now(),
  first_run_id    uuid,
  last_run_id     uuid
);
COMMENT ON TABLE reconciler.ledger_mismatches IS
  'Organizations whose calls and usage_metrics ledgers disagree, as of the latest full pass; maintained by synqall-reconciler.';
ALTER TABLE reconciler.ledger_mismatches ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON reconciler.ledger_mismatches FROM PUBLIC;
GRANT SELECT, INSERT, UPDATE, DELETE ON reconciler.ledger_mismatches TO synqall_reconciler;
DROP POLICY IF EXISTS synqall_reconciler_all ON reconciler.ledger_mismatches;
CREATE POLICY synqall_reconciler_all ON reconciler.ledger_mismatches
  TO synqall_reconciler USING (true) WITH CHECK (true);

-- The count of each pass, beside its other counts.
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS ledger_mismatches integer;
GRANT UPDATE (ledger_mismatches) ON reconciler.runs TO synqall_reconciler;
