-- Whether a sweep has covered every organization since the triggers exist, the database's identity (a replica must
-- show the same), and what the latest sweep measured (the mass-correction guard of an
-- incremental pass compares with it).
SELECT t.initialized_at, t.database_id,
       (SELECT r.orgs_checked FROM reconciler.runs r
         WHERE r.kind IS DISTINCT FROM 'incremental' AND r.status = 'ok' AND r.mode <> 'revert'
           AND r.billed_minutes IS NOT NULL
         ORDER BY r.started_at DESC LIMIT 1) AS sweep_orgs,
       (SELECT r.billed_minutes FROM reconciler.runs r
         WHERE r.kind IS DISTINCT FROM 'incremental' AND r.status = 'ok' AND r.mode <> 'revert'
           AND r.billed_minutes IS NOT NULL
         ORDER BY r.started_at DESC LIMIT 1) AS sweep_billed_minutes,
       (SELECT r.ledger_mismatches FROM reconciler.runs r
         WHERE r.status IN ('ok', 'partial') AND r.ledger_mismatches IS NOT NULL
         ORDER BY r.started_at DESC LIMIT 1) AS last_mismatches
  FROM reconciler.tracking t
