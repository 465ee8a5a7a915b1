-- V9: the change-tracking triggers never JIT-compile.
--
-- Each trigger function's statement is planned once per database session and the plan kept:
-- PL/pgSQL caches it, and the transition table's size at that first call is what it was
-- planned for. A session whose first UPDATE of organizations was a bulk one (a monthly reset,
-- a backfill) kept a plan priced for 100k rows, above jit_above_cost, and JIT-compiled it
-- again at every later call: each single-row increment_used_minutes in that session then took
-- ~120 ms instead of ~0.5 ms (measured in the bench; an app's pooled connection lives that
-- long). With jit off inside these functions the kept plan costs what its rows cost.
-- Re-runnable: ALTER FUNCTION … SET replaces the setting.
ALTER FUNCTION reconciler.changes_from_calls() SET jit = off;
ALTER FUNCTION reconciler.changes_from_usage_metrics() SET jit = off;
ALTER FUNCTION reconciler.changes_from_organizations() SET jit = off;
ALTER FUNCTION reconciler.changes_truncated() SET jit = off;
