-- Every call without an organization, with the organizations its user could own it through:
-- all memberships (oldest first) and those that already existed when the call was created.
-- Memberships of organizations that no longer exist are ignored.
-- Template: {membership_created_at} is uo.created_at, or NULL::timestamptz when
-- user_organizations has no created_at column.
SELECT c.id AS call_id,
       c.user_id,
       COALESCE(m.all_orgs, '{}') AS all_orgs,
       COALESCE(m.orgs_at_call_time, '{}') AS orgs_at_call_time
  FROM public.calls c
  LEFT JOIN LATERAL (
    SELECT array_agg(uo.organization_id
                     ORDER BY {membership_created_at}, uo.organization_id) AS all_orgs,
           array_agg(uo.organization_id
                     ORDER BY {membership_created_at}, uo.organization_id)
             FILTER (WHERE {membership_created_at} <= c.created_at) AS orgs_at_call_time
      FROM public.user_organizations uo
      JOIN public.organizations o ON o.id = uo.organization_id
     WHERE uo.user_id = c.user_id
  ) m ON true
 WHERE c.organization_id IS NULL
 ORDER BY c.id
