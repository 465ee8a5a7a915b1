-- Whether a valid index on public.<$1> has <$2> as its first key column.
SELECT EXISTS (
  SELECT 1
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class t ON t.oid = i.indrelid
    JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
   WHERE n.nspname = 'public' AND t.relname = $1 AND a.attname = $2 AND i.indisvalid
)
