-- The type of organizations.used_minutes; no row when the column is missing.
SELECT data_type::text FROM information_schema.columns
 WHERE table_schema = 'public' AND table_name = 'organizations'
   AND column_name = 'used_minutes'
