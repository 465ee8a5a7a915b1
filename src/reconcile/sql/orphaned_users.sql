-- Users who belong to no organization (the seed's "orphaned users" check). Counted and
-- reported only. Fails with undefined_table/insufficient_privilege where auth.users is absent
-- or unreadable; the pass then skips this check.
SELECT count(*)
  FROM auth.users u
 WHERE NOT EXISTS (SELECT 1 FROM public.user_organizations uo WHERE uo.user_id = u.id)
