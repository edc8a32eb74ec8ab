-- The SQL of GET /loyalty/me (SqlAccounts.get in src/authloyalty/loyalty/repository.py) as the
-- service sends it: read-only units of work run in autocommit on PostgreSQL, so the request is
-- this one SELECT (before commit c8b6b4b it was BEGIN; SELECT; ROLLBACK). bench/run.py checks
-- that this still matches what the service sends (benchlib/sqlcheck.py). Same variables as
-- withdrawal.sql.
\set n random(1, :users)
SELECT accounts.user_id, accounts.balance, accounts.created_at FROM accounts WHERE accounts.user_id = (:prefix::text || lpad(to_hex(:n::integer), 12, '0'))::uuid;
