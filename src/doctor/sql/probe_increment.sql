-- One call of the app's function, inside a transaction doctor rolls back. $1 org, $2 minutes
SELECT public.increment_used_minutes($1, $2)
