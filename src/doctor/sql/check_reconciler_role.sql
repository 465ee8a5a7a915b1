-- Whether doctor should also judge what the role synqall_reconciler sees: it exists and the
-- current role is not acting as it (doctor run as the owner or a superuser, who hold every
-- role's privileges but are not bound by its row-level security).
SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'synqall_reconciler')
            THEN NOT pg_catalog.pg_has_role(current_user, 'synqall_reconciler', 'USAGE')
                 OR (SELECT r.rolsuper OR r.rolbypassrls FROM pg_catalog.pg_roles r
                      WHERE r.rolname = current_user)
            ELSE false END AS check_role
