-- The session settings in effect, as the server reports them (pg_settings, what SHOW shows),
-- in their base units: milliseconds for the timeouts, seconds for the keepalives. One scan of
-- pg_settings (a function that lists every setting each time it is read).
SELECT max(s.setting::bigint) FILTER (WHERE s.name = 'statement_timeout') AS statement_timeout_ms,
       max(s.setting::bigint) FILTER (WHERE s.name = 'lock_timeout') AS lock_timeout_ms,
       max(s.setting::bigint) FILTER (WHERE s.name = 'idle_in_transaction_session_timeout')
         AS idle_in_transaction_ms,
       max(s.setting::bigint) FILTER (WHERE s.name = 'tcp_keepalives_idle') AS keepalives_idle_s,
       max(s.setting::bigint) FILTER (WHERE s.name = 'tcp_user_timeout') AS tcp_user_timeout_ms,
       pg_catalog.inet_server_addr() IS NULL AS unix_socket
  FROM pg_catalog.pg_settings s
 WHERE s.name IN ('statement_timeout', 'lock_timeout', 'idle_in_transaction_session_timeout',
                  'tcp_keepalives_idle', 'tcp_user_timeout')
