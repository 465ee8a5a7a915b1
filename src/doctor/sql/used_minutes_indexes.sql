-- Indexes on organizations that cover used_minutes (the seed's idx_organizations_used_minutes),
-- their size, and how many of the table's updates were HOT since statistics were reset.
SELECT ic.relname::text AS index_name,
       pg_catalog.pg_relation_size(ic.oid) AS index_bytes,
       COALESCE(s.n_tup_upd, 0) AS updates,
       COALESCE(s.n_tup_hot_upd, 0) AS hot_updates
  FROM pg_catalog.pg_index i
  JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
  JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
  LEFT JOIN pg_catalog.pg_stat_user_tables s ON s.relid = t.oid
 WHERE n.nspname = 'public' AND t.relname = 'organizations'
   AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                WHERE a.attrelid = t.oid AND a.attname = 'used_minutes'
                  AND (a.attnum = ANY (i.indkey)
                       OR pg_catalog.pg_get_indexdef(i.indexrelid) LIKE '%used_minutes%'))
 ORDER BY 1
