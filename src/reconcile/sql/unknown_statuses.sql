-- The call statuses the configuration does not know, with their call counts: run only when
-- the comparison (drifted_orgs.sql) counted such calls, so a clean database never pays for it;
-- while they exist a sweep reads calls a second time to name them.
-- $1 timestamptz: start of the billing period (NULL for all_time)
-- $2 text[]: the known call statuses (usage.known_statuses)
-- {filter_c}: empty, or `AND c.organization_id = ANY ($3::uuid[])` as in drifted_orgs.sql
SELECT c.status, count(*)::bigint AS calls
  FROM public.calls c
 WHERE c.status IS DISTINCT FROM 'completed'
   AND (c.status = ANY ($2::text[])) IS NOT TRUE
   AND ($1::timestamptz IS NULL OR c.created_at >= $1)
   {filter_c}
 GROUP BY c.status
 ORDER BY calls DESC, c.status
