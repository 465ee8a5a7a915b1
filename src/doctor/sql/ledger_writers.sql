-- Who besides the app's trusted paths may write the ledgers the bill is computed from: for the
-- API roles anon and authenticated, each of INSERT, UPDATE (of calls.organization_id, status,
-- duration_minutes; of any usage_metrics column) and DELETE on public.calls and
-- public.usage_metrics: whether the privilege is granted, whether row-level security leaves
-- the role a way in (off, bypassed, or a permissive policy for that command), and the
-- applicable policies' conditions (does each pin organization_id to the user's memberships?).
WITH roles AS (
  SELECT r.oid, r.rolname, r.rolsuper, r.rolbypassrls
    FROM pg_catalog.pg_roles r
   WHERE r.rolname IN ('anon', 'authenticated')
),
tables AS (
  SELECT c.oid, n.nspname || '.' || c.relname AS relation, c.relrowsecurity,
         c.relforcerowsecurity, c.relowner
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE n.nspname = 'public' AND c.relname IN ('calls', 'usage_metrics')
),
commands AS (
  SELECT * FROM (VALUES ('INSERT', 'a'), ('UPDATE', 'w'), ('DELETE', 'd')) AS v(command, letter)
)
SELECT r.rolname::text AS role, t.relation, m.command,
       CASE
         WHEN m.command <> 'UPDATE' THEN pg_catalog.has_table_privilege(r.oid, t.oid, m.command)
         WHEN t.relation = 'public.calls' THEN
              pg_catalog.has_column_privilege(r.oid, t.oid, 'organization_id', 'UPDATE')
           OR pg_catalog.has_column_privilege(r.oid, t.oid, 'status', 'UPDATE')
           OR pg_catalog.has_column_privilege(r.oid, t.oid, 'duration_minutes', 'UPDATE')
         ELSE pg_catalog.has_any_column_privilege(r.oid, t.oid, 'UPDATE')
       END AS granted,
       (NOT t.relrowsecurity OR r.rolsuper OR r.rolbypassrls
         OR (pg_catalog.pg_has_role(r.oid, t.relowner, 'USAGE') AND NOT t.relforcerowsecurity))
         AS rls_open,
       COALESCE(array_agg(p.polname::text ORDER BY p.polname)
                  FILTER (WHERE p.polname IS NOT NULL), '{}') AS policies,
       COALESCE(bool_and(COALESCE(pg_catalog.pg_get_expr(COALESCE(p.polwithcheck, p.polqual),
                                                         p.polrelid), '')
                         ILIKE '%user_organizations%')
                  FILTER (WHERE p.polname IS NOT NULL), false) AS all_pinned
  FROM roles r
 CROSS JOIN tables t
 CROSS JOIN commands m
  LEFT JOIN pg_catalog.pg_policy p
         ON p.polrelid = t.oid AND p.polpermissive AND p.polcmd IN (m.letter, '*')
        AND EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr(roleid)
                     WHERE pr.roleid = 0 OR pg_catalog.pg_has_role(r.oid, pr.roleid, 'USAGE'))
 GROUP BY r.rolname, t.relation, m.command, t.oid, r.oid, r.rolsuper, r.rolbypassrls,
          t.relrowsecurity, t.relforcerowsecurity, t.relowner
 ORDER BY 1, 2, 3
