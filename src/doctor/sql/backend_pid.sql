-- The backend serving this statement: a different one than the previous statement's means a
-- transaction pooler sits in between.
SELECT pg_catalog.pg_backend_pid()
