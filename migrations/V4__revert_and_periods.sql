-- V4: what `revert RUN_ID` and the calendar-month period need in the journal.
--
-- A revert is a run of its own (mode 'revert', reverted_run_id naming the run it undoes). Each
-- counter or attribution it restores is journalled like any other correction, pointing at the
-- journal row it undoes; a unique index makes "undone twice" impossible even for two reverts
-- racing. Restoring a NULL counter or a NULL organization_id is allowed, so the "new" columns
-- lose NOT NULL. Period resets (first pass of a calendar month) are counted on the run row.
--
-- Only the reconciler's own tables change: no lock on any application table.

ALTER TABLE reconciler.runs
  ADD COLUMN IF NOT EXISTS reverted_run_id uuid REFERENCES reconciler.runs (id),
  ADD COLUMN IF NOT EXISTS period_resets integer;
ALTER TABLE reconciler.runs DROP CONSTRAINT IF EXISTS runs_mode_check;
ALTER TABLE reconciler.runs
  ADD CONSTRAINT runs_mode_check CHECK (mode IN ('daemon', 'once', 'demo', 'revert'));

ALTER TABLE reconciler.adjustments
  ADD COLUMN IF NOT EXISTS reverts_adjustment_id bigint REFERENCES reconciler.adjustments (id);
ALTER TABLE reconciler.adjustments ALTER COLUMN new_used_minutes DROP NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS adjustments_reverted_once
  ON reconciler.adjustments (reverts_adjustment_id) WHERE reverts_adjustment_id IS NOT NULL;

ALTER TABLE reconciler.call_repairs
  ADD COLUMN IF NOT EXISTS reverts_call_repair_id bigint REFERENCES reconciler.call_repairs (id);
ALTER TABLE reconciler.call_repairs ALTER COLUMN new_organization_id DROP NOT NULL;
ALTER TABLE reconciler.call_repairs DROP CONSTRAINT IF EXISTS call_repairs_rule_check;
ALTER TABLE reconciler.call_repairs
  ADD CONSTRAINT call_repairs_rule_check
  CHECK (rule IN ('only_membership', 'membership_at_call_time', 'earliest_membership', 'revert'));
CREATE UNIQUE INDEX IF NOT EXISTS call_repairs_reverted_once
  ON reconciler.call_repairs (reverts_call_repair_id) WHERE reverts_call_repair_id IS NOT NULL;

-- The least-privilege role closes run rows with the new count too.
GRANT UPDATE (period_resets) ON reconciler.runs TO synqall_reconciler;
