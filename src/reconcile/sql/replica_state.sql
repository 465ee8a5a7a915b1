-- On the replica: is it a hot standby of this database, and has it replayed this pass's start?
-- $1 uuid this database's identity (reconciler.tracking.database_id on the primary),
-- $2 uuid the pass's run id (NULL in a dry run, which writes no run row),
-- $3 text the primary's WAL position after the pass's last write before the comparison.
SELECT pg_catalog.pg_is_in_recovery() AS in_recovery,
       (SELECT t.database_id = $1 FROM reconciler.tracking t) AS same_database,
       ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM reconciler.runs r WHERE r.id = $2))
         AS sees_this_run,
       COALESCE(pg_catalog.pg_last_wal_replay_lsn() >= $3::text::pg_lsn, false) AS caught_up,
       (EXTRACT(epoch FROM pg_catalog.now() - pg_catalog.pg_last_xact_replay_timestamp())
         * 1000)::bigint AS replay_age_ms
