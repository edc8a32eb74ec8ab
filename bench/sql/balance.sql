-- The SQL of GET /loyalty/me (CoalescedAccounts in src/authloyalty/loyalty/repository.py) as
-- the service sends it: one SELECT in autocommit, for all the balance reads that arrive in the
-- same event-loop turn (an array of N ids); pgbench sends it for one id per statement, which is
-- what the service sends for a lone request. bench/run.py checks that this still matches what
-- the service sends (benchlib/sqlcheck.py). Same variables as withdrawal.sql.
\set n random(1, :users)
SELECT user_id, balance, created_at, frozen_at, held, next_expiry FROM accounts WHERE user_id = ANY(CAST(ARRAY[(:prefix::text || lpad(to_hex(:n::integer), 12, '0'))::uuid] AS uuid[]));
