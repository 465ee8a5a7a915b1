-- Count and minutes of the counted calls of some organizations: the fingerprint that must not
-- have changed between the usage read and the repair (docs/design.md, "Confirm before writing").
-- Template: {call_total} as in drifted_orgs.sql.
-- $1 uuid[]: organizations; $2 timestamptz: start of the billing period (NULL for all_time)
SELECT c.organization_id,
       count(*) AS entries,
       {call_total} AS minutes
  FROM public.calls c
 WHERE c.organization_id = ANY ($1)
   AND c.status = 'completed'
   AND ($2::timestamptz IS NULL OR c.created_at >= $2)
 GROUP BY c.organization_id
