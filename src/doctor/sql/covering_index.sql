-- Whether a valid, non-partial index on public.calls leads with organization_id and carries
-- status, duration_minutes and created_at (as keys or INCLUDE columns): what an incremental
-- pass's per-organization lookups read without touching the table. Also the table's size
-- estimate, so the advice is only a warning where it matters.
SELECT EXISTS (
         SELECT 1
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_attribute a0
             ON a0.attrelid = i.indrelid AND a0.attnum = i.indkey[0]
          WHERE i.indrelid = 'public.calls'::regclass AND i.indisvalid AND i.indpred IS NULL
            AND a0.attname = 'organization_id'
            AND (SELECT count(*) FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
                    AND a.attname IN ('status', 'duration_minutes', 'created_at')) = 3
       ) AS covered,
       GREATEST((SELECT c.reltuples FROM pg_catalog.pg_class c
                  WHERE c.oid = 'public.calls'::regclass), 0)::bigint AS calls_estimate
