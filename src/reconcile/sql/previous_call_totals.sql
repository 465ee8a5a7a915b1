-- The previous calendar month's total per organization on the calls ledger, for the given
-- (drifted) organizations only, through the organization_id index. A counter that holds the
-- previous month plus this month was never reset at the month boundary: a period rollover,
-- not a drift. Template: {call_total} as in drifted_orgs.sql.
-- $1 uuid[] organizations, $2 timestamptz previous period start, $3 timestamptz period start
SELECT c.organization_id, {call_total} AS minutes
  FROM public.calls c
 WHERE c.organization_id = ANY ($1)
   AND c.status = 'completed'
   AND c.created_at >= $2
   AND c.created_at < $3
 GROUP BY c.organization_id
