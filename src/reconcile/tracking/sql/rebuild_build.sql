-- Rebuild, step 2 of 2: the totals of some organizations (or all), per UTC month, from the
-- ledgers themselves, with the same row rules as the triggers (reconciler.call_minutes,
-- reconciler.metric_minutes, reconciler.ledger_month).
-- Template: {org_filter} as in rebuild_clear.sql.
-- $1 uuid[]; $2 bigint lock key, $3 integer the backend holding it (fenced)
INSERT INTO reconciler.ledger_totals
       (organization_id, month, calls_ceil, calls_round, calls_floor, metrics_raw)
SELECT r.organization_id, r.month,
       COALESCE(sum(pg_catalog.ceil(r.d)), 0), COALESCE(sum(pg_catalog.round(r.d)), 0),
       COALESCE(sum(pg_catalog.floor(r.d)), 0), COALESCE(sum(r.v), 0)
  FROM (SELECT c.organization_id, reconciler.ledger_month(c.created_at::timestamptz) AS month,
               reconciler.call_minutes(c.status::text, c.duration_minutes::numeric) AS d,
               NULL::numeric AS v
          FROM public.calls c
         WHERE c.organization_id {org_filter}
        UNION ALL
        SELECT m.organization_id, reconciler.ledger_month(m.created_at::timestamptz), NULL,
               reconciler.metric_minutes(m.metric_type::text, m.metric_value::numeric)
          FROM public.usage_metrics m
         WHERE m.organization_id {org_filter}) r
 WHERE (r.d IS NOT NULL OR r.v IS NOT NULL)
   AND (SELECT reconciler.holds_lock($2, $3))
 GROUP BY r.organization_id, r.month
