-- The session settings in effect, as the server reports them (pg_settings, what SHOW shows),
-- in their base units: milliseconds for the timeouts, seconds for the keepalives.
SELECT (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'statement_timeout') AS statement_timeout_ms,
       (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'lock_timeout') AS lock_timeout_ms,
       (SELECT setting::bigint FROM pg_catalog.pg_settings
         WHERE name = 'idle_in_transaction_session_timeout') AS idle_in_transaction_ms,
       (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'tcp_keepalives_idle') AS keepalives_idle_s,
       (SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'tcp_user_timeout') AS tcp_user_timeout_ms,
       pg_catalog.inet_server_addr() IS NULL AS unix_socket
