-- The call statuses the configuration does not know, with their call counts. After a
-- comparison that counted such calls (doctor's, a re-read's: drifted_orgs.sql), so a clean
-- database never pays for it; after a sweep's, which reads completed calls only, of every
-- organization when status_statistics.sql says so (a second read of calls), else of the
-- drifted organizations (reconcile/scan.rs, count_unknown_statuses).
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
