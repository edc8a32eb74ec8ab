-- The SQL of POST /loyalty/me/withdrawals (src/authloyalty/loyalty/repository.py:
-- SqlAccounts.change_balance then SqlLedger.append, one transaction), as the service sends it:
-- BEGIN; conditional UPDATE ... RETURNING; INSERT ... RETURNING id; COMMIT. bench/run.py checks
-- that this still matches what the service sends (benchlib/sqlcheck.py).
-- Run with: pgbench -M prepared -D users=N -D prefix=<seed.ID_PREFIX> (seeded ids are prefix ||
-- 12 hex digits of n), so the rows are the same ones the services hit.
\set n random(1, :users)
\set amount 1
BEGIN;
UPDATE accounts SET balance = accounts.balance + (- :amount::bigint), updated_at = now() WHERE accounts.user_id = (:prefix::text || lpad(to_hex(:n::integer), 12, '0'))::uuid AND accounts.balance + (- :amount::bigint) >= 0 RETURNING accounts.balance AS balance_after \gset
INSERT INTO ledger_entries (account_id, kind, amount, comment, balance_after, created_at) VALUES ((:prefix::text || lpad(to_hex(:n::integer), 12, '0'))::uuid, 'withdrawal', :amount::bigint, 'pgbench withdrawal', :balance_after::bigint, now()) RETURNING ledger_entries.id;
COMMIT;
