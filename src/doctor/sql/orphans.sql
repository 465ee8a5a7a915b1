-- Calls without an organization (the seed's check counts the completed ones), and calls with a
-- duration a pass counts as 0.
SELECT count(*) FILTER (WHERE c.organization_id IS NULL AND c.status = 'completed') AS orphaned_completed,
       count(*) FILTER (WHERE c.organization_id IS NULL AND c.status IS DISTINCT FROM 'completed') AS orphaned_other,
       count(*) FILTER (WHERE c.status = 'completed' AND c.duration_minutes IS NULL) AS null_durations,
       count(*) FILTER (WHERE c.status = 'completed' AND c.duration_minutes < 0) AS negative_durations
  FROM public.calls c
 WHERE c.organization_id IS NULL
    OR (c.status = 'completed' AND (c.duration_minutes IS NULL OR c.duration_minutes < 0))
