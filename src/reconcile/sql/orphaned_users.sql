-- Users who belong to no organization (the seed's "orphaned users" check). Counted and
-- reported only. Read through reconciler.auth_user_ids (V5), a view owned by the migrating
-- role, so the login needs no USAGE on schema auth. Fails with undefined_table where the view
-- could not be created (auth.users absent or unreadable at migrate time); the pass then skips
-- this check.
SELECT count(*)
  FROM reconciler.auth_user_ids u
 WHERE NOT EXISTS (SELECT 1 FROM public.user_organizations uo WHERE uo.user_id = u.id)
