-- Who can reach the reconciler's journal besides its owner and role: the API roles must not.
-- And the reconciler's own role must stay unprivileged.
SELECT r.rolname::text AS role,
       pg_catalog.has_schema_privilege(r.oid, 'reconciler', 'USAGE') AS schema_usage,
       EXISTS (SELECT 1 FROM pg_catalog.pg_class c
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'reconciler' AND c.relkind = 'r'
                  AND pg_catalog.has_table_privilege(r.oid, c.oid, 'SELECT,INSERT,UPDATE,DELETE')) AS table_access,
       r.rolsuper, r.rolbypassrls, r.rolcanlogin
  FROM pg_catalog.pg_roles r
 WHERE r.rolname IN ('anon', 'authenticated', 'synqall_reconciler')
 ORDER BY 1
