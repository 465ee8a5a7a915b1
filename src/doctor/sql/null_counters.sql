-- Organizations whose counter is NULL (always drift).
SELECT count(*) FROM public.organizations WHERE used_minutes IS NULL
