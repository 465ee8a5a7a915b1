-- Whether valid, non-partial indexes lead with organization_id and carry the columns an
-- incremental pass's per-organization re-read and a sweep's aggregate need (as keys or INCLUDE
-- columns), so that they read only the index: on calls status, duration_minutes and
-- created_at; on usage_metrics metric_type, metric_value and created_at. Also each table's row
-- estimate (the advice is only a warning where it matters) and an estimate of the share of
-- its pages still all-visible (an index-only scan reads the table for the others): the pages
-- VACUUM or ANALYZE last counted as marked, less one page per row updated or deleted since
-- (n_dead_tup) and the pages rows inserted since the last VACUUM fill; pessimistic on
-- purpose (a page counted twice only sends the sweep to the tables). Read on the primary:
-- a standby keeps no statistics of its own writes.
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
       GREATEST(t.reltuples, 0)::bigint AS rows_estimate,
       CASE WHEN t.relpages > 0 THEN
         GREATEST(LEAST(t.relallvisible, t.relpages) - COALESCE(s.n_dead_tup, 0), 0)::float8
           / (t.relpages + COALESCE(s.n_ins_since_vacuum, 0)
                           / GREATEST(t.reltuples / t.relpages, 1))
       ELSE 0 END AS all_visible
  FROM wanted w
  JOIN pg_catalog.pg_class t ON t.oid = w.relation::regclass
  LEFT JOIN pg_catalog.pg_stat_all_tables s ON s.relid = t.oid
 ORDER BY w.relation
