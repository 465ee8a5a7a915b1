-- Every call without an organization, with the organizations its user could own it through:
-- all memberships (oldest first) and those that already existed when the call was created.
-- Memberships of organizations that no longer exist are ignored.
--
-- Set-based on purpose: the orphans are collected first (an index lookup on
-- organization_id IS NULL), then joined to the memberships in one go. A per-orphan lookup
-- (LATERAL) turns into a full scan of user_organizations per orphan whenever the planner's
-- statistics are stale, e.g. right after a bulk load.
-- Template: {membership_created_at} is m.created_at, or NULL::timestamptz when
-- user_organizations has no created_at column.
WITH orphans AS MATERIALIZED (
  SELECT c.id, c.user_id, c.created_at
    FROM public.calls c
   WHERE c.organization_id IS NULL
),
memberships AS (
  SELECT uo.user_id, uo.organization_id, uo.created_at
    FROM public.user_organizations uo
    JOIN public.organizations org ON org.id = uo.organization_id
   WHERE uo.user_id IN (SELECT user_id FROM orphans)
)
SELECT o.id AS call_id,
       o.user_id,
       COALESCE(array_agg(m.organization_id ORDER BY {membership_created_at}, m.organization_id)
                  FILTER (WHERE m.organization_id IS NOT NULL), '{}') AS all_orgs,
       COALESCE(array_agg(m.organization_id ORDER BY {membership_created_at}, m.organization_id)
                  FILTER (WHERE {membership_created_at} <= o.created_at), '{}') AS orgs_at_call_time
  FROM orphans o
  LEFT JOIN memberships m ON m.user_id = o.user_id
 GROUP BY o.id, o.user_id
 ORDER BY o.id
