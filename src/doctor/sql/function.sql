-- Every public.increment_used_minutes overload: how it runs and who may execute it.
-- "PUBLIC executes" reads the ACL itself (a NULL ACL is the default: PUBLIC may execute).
SELECT p.oid::regprocedure::text AS signature,
       p.prosecdef AS security_definer,
       COALESCE((SELECT s FROM pg_catalog.unnest(p.proconfig) s
                  WHERE s LIKE 'search_path=%' LIMIT 1), '') AS search_path_setting,
       EXISTS (SELECT 1
                 FROM pg_catalog.aclexplode(COALESCE(p.proacl,
                                                     pg_catalog.acldefault('f', p.proowner))) a
                WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_executes,
       CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'anon')
            THEN pg_catalog.has_function_privilege('anon', p.oid, 'EXECUTE') END AS anon_executes,
       pg_catalog.has_function_privilege(p.oid, 'EXECUTE') AS we_execute
  FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'public'
   AND p.proname = 'increment_used_minutes'
 ORDER BY 1
