-- The SQL of POST /loyalty/me/withdrawals without Idempotency-Key, as the service sends it
-- (CoalescedMovements in src/authloyalty/loyalty/repository.py): one statement in autocommit
-- that locks the account, applies the conditional update and appends the ledger entry. The
-- service sends it once for all the movements that arrive in the same event-loop turn (arrays
-- of N); pgbench sends it for one withdrawal per statement (arrays of 1), which is what the
-- service sends for a lone request. bench/run.py checks that the command sequence still
-- matches what the service sends (benchlib/sqlcheck.py).
-- Run with: pgbench -M prepared -D users=N -D prefix=<seed.ID_PREFIX> (seeded ids are prefix ||
-- 12 hex digits of n), so the rows are the same ones the services hit.
\set n random(1, :users)
\set amount 1
WITH req AS ( SELECT * FROM unnest(CAST(ARRAY[0] AS integer[]), CAST(ARRAY[(:prefix::text || lpad(to_hex(:n::integer), 12, '0'))::uuid] AS uuid[]), CAST(ARRAY['withdrawal'] AS text[]), CAST(ARRAY[:amount::bigint] AS bigint[]), CAST(ARRAY['pgbench withdrawal'] AS text[]), CAST(ARRAY[now()] AS timestamptz[])) AS r(ord, account_id, kind, amount, comment, at) ), locked AS ( SELECT user_id FROM accounts WHERE user_id IN (SELECT account_id FROM req) ORDER BY user_id FOR UPDATE ), changed AS ( UPDATE accounts SET balance = accounts.balance + CASE WHEN req.kind = 'deposit' THEN req.amount ELSE -req.amount END, updated_at = req.at FROM req JOIN locked ON locked.user_id = req.account_id WHERE accounts.user_id = req.account_id AND accounts.balance + CASE WHEN req.kind = 'deposit' THEN req.amount ELSE -req.amount END >= 0 RETURNING accounts.user_id, accounts.balance ), entries AS ( INSERT INTO ledger_entries (account_id, kind, amount, comment, balance_after, created_at) SELECT req.account_id, req.kind, req.amount, req.comment, changed.balance, req.at FROM req JOIN changed ON changed.user_id = req.account_id ORDER BY req.ord RETURNING id, account_id ) SELECT req.ord, entries.id, changed.balance, EXISTS (SELECT 1 FROM locked WHERE locked.user_id = req.account_id) AS found FROM req LEFT JOIN changed ON changed.user_id = req.account_id LEFT JOIN entries ON entries.account_id = req.account_id ORDER BY req.ord;
