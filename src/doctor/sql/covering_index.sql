-- Whether valid, non-partial indexes lead with organization_id and carry the columns an
-- incremental pass's per-organization re-read needs (as keys or INCLUDE columns), so that it
-- reads only the index: on calls status, duration_minutes and created_at; on usage_metrics
-- metric_type, metric_value and created_at. Also the size estimate of calls, so the advice is
-- only a warning where it matters.
WITH wanted(relation, columns) AS (
  VALUES ('public.calls', ARRAY['status', 'duration_minutes', 'created_at']),
         ('public.usage_metrics', ARRAY['metric_type', 'metric_value', 'created_at'])
)
SELECT w.relation,
       EXISTS (
         SELECT 1
           FROM pg_catalog.pg_index i
           JOIN pg_catalog.pg_attribute a0
             ON a0.attrelid = i.indrelid AND a0.attnum = i.indkey[0]
          WHERE i.indrelid = w.relation::regclass AND i.indisvalid AND i.indpred IS NULL
            AND a0.attname = 'organization_id'
            AND (SELECT count(*) FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
                    AND a.attname = ANY (w.columns)) = 3
       ) AS covered,
       GREATEST((SELECT c.reltuples FROM pg_catalog.pg_class c
                  WHERE c.oid = w.relation::regclass), 0)::bigint AS rows_estimate
  FROM wanted w
 ORDER BY w.relation
