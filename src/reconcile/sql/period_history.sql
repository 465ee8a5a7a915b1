-- Whether this is the first pass of a new calendar month: a successful calendar_month pass
-- started before the period began, and none since. $1 timestamptz period start
SELECT max(r.started_at) FILTER (WHERE r.started_at < $1) AS last_before,
       COALESCE(bool_or(r.started_at >= $1), false) AS any_since
  FROM reconciler.runs r
 WHERE r.period = 'calendar_month'
   AND r.status = 'ok'
   AND r.mode <> 'revert'
