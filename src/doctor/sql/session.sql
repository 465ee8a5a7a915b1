-- Who and where this session is: backend, application_name as the server sees it, role, version.
SELECT pg_catalog.pg_backend_pid() AS pid,
       pg_catalog.current_setting('application_name') AS application_name,
       current_user::text AS role,
       pg_catalog.current_setting('server_version') AS server_version
