-- The application tables' columns and their types, as information_schema.columns names them
-- (a domain by its base type) and for the same columns (those the role holds a privilege on),
-- read from pg_catalog: information_schema's views cost tens of milliseconds to plan, at
-- every pass.
SELECT c.relname::text AS table_name,
       a.attname::text AS column_name,
       pg_catalog.format_type(CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE a.atttypid END,
                              NULL) AS data_type
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
 WHERE n.nspname = 'public'
   AND c.relname IN ('organizations', 'calls', 'usage_metrics', 'user_organizations')
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
   AND a.attnum > 0 AND NOT a.attisdropped
   AND pg_catalog.has_column_privilege(c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES')
