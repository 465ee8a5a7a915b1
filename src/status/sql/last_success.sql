-- When the last successful pass finished (reverts are not passes), whatever --limit shows,
-- the database's clock to measure its age by, and the ledger mismatches open now (V7).
SELECT (SELECT max(finished_at) FROM reconciler.runs
         WHERE status = 'ok' AND mode <> 'revert') AS last_success_at,
       pg_catalog.now() AS now,
       (SELECT count(*) FROM reconciler.ledger_mismatches) AS ledger_mismatches,
       (SELECT min(first_seen_at) FROM reconciler.ledger_mismatches) AS oldest_mismatch_at
