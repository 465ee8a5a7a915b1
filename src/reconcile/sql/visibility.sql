-- Can a role see every row of the tables a pass reasons about, and write what a pass writes?
-- (docs/design.md, "See before you write"). One row per (relation, reader):
--   can_select / can_update: table or column privileges
--   rls_hides: row-level security applies to that reader (it is on, the reader is no
--              superuser, has no BYPASSRLS and does not own the table unless RLS is forced)
--   select_policies: permissive SELECT (or ALL) policies that apply to the reader; any_true:
--              one of them is USING (true); restrictive: applicable restrictive policies that
--              are not USING (true) (they hide rows even beside a permissive true)
--   update_policies: permissive UPDATE (or ALL) policies that apply to the reader
--   estimate: the planner's row estimate (pg_class.reltuples, -1 when never analyzed)
-- $1 text[] relations ('public.calls'), $2 text[] readers (role names; NULL: the current role,
-- is_me), $3 text[] the column a pass updates (NULL: read only)
WITH wanted AS (
  -- Looked up in the catalogs, not with to_regclass: naming auth.users needs USAGE on schema
  -- auth, which the login has no need of.
  SELECT w.relation, COALESCE(w.reader, current_user::text) AS reader, w.reader IS NULL AS is_me,
         w.write_column,
         (SELECT c.oid FROM pg_catalog.pg_class c
            JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = split_part(w.relation, '.', 1)
             AND c.relname = split_part(w.relation, '.', 2)) AS oid
    FROM unnest($1::text[], $2::text[], $3::text[]) AS w(relation, reader, write_column)
),
readers AS (
  SELECT w.*, r.oid AS reader_oid, r.rolsuper, r.rolbypassrls
    FROM wanted w
    JOIN pg_catalog.pg_roles r ON r.rolname = w.reader
),
policies AS (
  SELECT rd.relation, rd.reader, p.polcmd, p.polpermissive,
         COALESCE(pg_catalog.pg_get_expr(p.polqual, p.polrelid), 'true') = 'true' AS qual_true
    FROM readers rd
    JOIN pg_catalog.pg_policy p ON p.polrelid = rd.oid
   WHERE EXISTS (SELECT 1 FROM unnest(p.polroles) AS pr(roleid)
                  WHERE pr.roleid = 0 OR pg_catalog.pg_has_role(rd.reader_oid, pr.roleid, 'USAGE'))
)
SELECT rd.relation, rd.reader, rd.is_me, rd.write_column,
       rd.oid IS NOT NULL AS present,
       rd.oid IS NOT NULL
         AND pg_catalog.has_table_privilege(rd.reader_oid, rd.oid, 'SELECT') AS can_select,
       rd.write_column IS NULL OR (rd.oid IS NOT NULL
         AND pg_catalog.has_column_privilege(rd.reader_oid, rd.oid, rd.write_column, 'UPDATE')) AS can_update,
       COALESCE(c.relrowsecurity
         AND NOT rd.rolsuper AND NOT rd.rolbypassrls
         AND NOT (pg_catalog.pg_has_role(rd.reader_oid, c.relowner, 'USAGE')
                  AND NOT c.relforcerowsecurity), false) AS rls_hides,
       (SELECT count(*) FROM policies p
         WHERE p.relation = rd.relation AND p.reader = rd.reader
           AND p.polpermissive AND p.polcmd IN ('r', '*')) AS select_policies,
       COALESCE((SELECT bool_or(p.qual_true) FROM policies p
                  WHERE p.relation = rd.relation AND p.reader = rd.reader
                    AND p.polpermissive AND p.polcmd IN ('r', '*')), false) AS any_true,
       (SELECT count(*) FROM policies p
         WHERE p.relation = rd.relation AND p.reader = rd.reader
           AND NOT p.polpermissive AND p.polcmd IN ('r', '*') AND NOT p.qual_true) AS restrictive,
       (SELECT count(*) FROM policies p
         WHERE p.relation = rd.relation AND p.reader = rd.reader
           AND p.polpermissive AND p.polcmd IN ('w', '*')) AS update_policies,
       COALESCE(c.reltuples, -1)::bigint AS estimate
  FROM readers rd
  LEFT JOIN pg_catalog.pg_class c ON c.oid = rd.oid
 ORDER BY rd.relation, rd.reader
