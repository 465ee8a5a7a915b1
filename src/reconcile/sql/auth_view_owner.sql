-- The owner of reconciler.auth_user_ids: auth.users is read with its privileges (and its row
-- security), so that is whose view of auth.users must be whole. No row: no view.
SELECT r.rolname::text AS owner
  FROM pg_catalog.pg_class v
  JOIN pg_catalog.pg_roles r ON r.oid = v.relowner
 WHERE v.oid = pg_catalog.to_regclass('reconciler.auth_user_ids')
