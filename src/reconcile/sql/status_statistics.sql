-- Whether a sweep must count the calls of unknown statuses (sql/unknown_statuses.sql, a second
-- read of calls): the sweep's comparison reads completed calls only. True when the planner's
-- statistics of calls.status (ANALYZE's sample, also on a standby) show NULL statuses or a
-- status outside usage.known_statuses in its most common values or histogram, and when
-- there are no statistics at all (never analyzed: count to be sure). Otherwise the sweep counts
-- them for the drifted organizations only: a status too rare for the sample, or written since
-- the last ANALYZE, in an organization that does not drift goes unnamed until ANALYZE samples
-- it (docs/design.md, "Unknown call statuses").
-- $1 text[]: the known call statuses (usage.known_statuses)
SELECT COALESCE(bool_or(s.null_frac > 0
                        OR EXISTS (SELECT 1
                                     FROM unnest(s.most_common_vals::text::text[]) v(status)
                                    WHERE (v.status = ANY ($1::text[])) IS NOT TRUE)
                        OR EXISTS (SELECT 1
                                     FROM unnest(s.histogram_bounds::text::text[]) v(status)
                                    WHERE (v.status = ANY ($1::text[])) IS NOT TRUE)),
                true) AS count_them
  FROM pg_catalog.pg_stats s
 WHERE s.schemaname = 'public' AND s.tablename = 'calls' AND s.attname = 'status'
