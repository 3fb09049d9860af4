--
-- transactions: hits count at commit only; rollback, savepoints (rollback,
-- release, nesting), PL/pgSQL exception blocks, PREPARE TRANSACTION.
-- Paths used here start with /tx/.
--
-- (quietly: an earlier suite may have created it)
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS apicount;
RESET client_min_messages;
SET timezone = 'UTC';

-- the worker connects once contrib_regression exists; wait for it (up to 30 s)
DO $$
BEGIN
	FOR i IN 1..300 LOOP
		EXIT WHEN (SELECT worker_pid FROM apicount.stats) IS NOT NULL;
		PERFORM pg_sleep(0.1);
	END LOOP;
END
$$;
SELECT worker_pid IS NOT NULL AS worker_running FROM apicount.stats;

-- calls recorded (rollups + live) per path LIKE p in the last hour
CREATE FUNCTION pg_temp.calls(p text) RETURNS TABLE (path text, calls bigint)
LANGUAGE sql AS $$
	SELECT path, sum(calls)::bigint
	FROM apicount.top_apis(100000, now() - interval '1 hour', now() + interval '1 hour')
	WHERE path LIKE p
	GROUP BY path
	ORDER BY path
$$;

SELECT hits AS hits0 FROM apicount.stats \gset

-- commit counts; hits are invisible (live, stats, queries) until then
BEGIN;
SELECT apicount.hit('/tx/commit');
INSERT INTO apicount.requests (path) VALUES ('/tx/commit'), ('/tx/commit');
SELECT count(*) AS live_rows_before_commit FROM apicount.live WHERE path LIKE '/tx/%';
SELECT hits - :hits0 AS hits_before_commit FROM apicount.stats;
SELECT * FROM pg_temp.calls('/tx/commit');
COMMIT;
SELECT hits - :hits0 AS hits_after_commit FROM apicount.stats;
SELECT * FROM pg_temp.calls('/tx/commit');

-- rollback counts nothing
BEGIN;
SELECT apicount.hit('/tx/rollback');
INSERT INTO apicount.requests (path) VALUES ('/tx/rollback');
ROLLBACK;

-- an error aborts the whole transaction, hits made before it included
BEGIN;
SELECT apicount.hit('/tx/aborted');
\set VERBOSITY sqlstate
SELECT apicount.hit('/tx/aborted', status => 1000);
\set VERBOSITY default
COMMIT;

-- ROLLBACK TO SAVEPOINT drops what was recorded after the savepoint
BEGIN;
SELECT apicount.hit('/tx/sp/before');
SAVEPOINT s1;
SELECT apicount.hit('/tx/sp/rolledback');
INSERT INTO apicount.requests (path) VALUES ('/tx/sp/rolledback'), ('/tx/sp/before');
ROLLBACK TO SAVEPOINT s1;
SELECT apicount.hit('/tx/sp/after');
-- the same savepoint rolled back twice, then released
SELECT apicount.hit('/tx/sp/rolledback');
ROLLBACK TO SAVEPOINT s1;
SELECT apicount.hit('/tx/sp/after');
RELEASE SAVEPOINT s1;
COMMIT;

-- a failed statement inside a savepoint: ROLLBACK TO and carry on
BEGIN;
SELECT apicount.hit('/tx/sp-error/kept');
SAVEPOINT s1;
\set VERBOSITY sqlstate
INSERT INTO apicount.requests (path, status) VALUES ('/tx/sp-error/lost', 200), ('/tx/sp-error/lost', 99);
\set VERBOSITY default
ROLLBACK TO SAVEPOINT s1;
SELECT apicount.hit('/tx/sp-error/kept');
COMMIT;

-- nested savepoints with RELEASE
BEGIN;
SELECT apicount.hit('/tx/nest/l1');
SAVEPOINT a;
SELECT apicount.hit('/tx/nest/a');
SAVEPOINT b;
SELECT apicount.hit('/tx/nest/b');
RELEASE SAVEPOINT b;
SAVEPOINT c;
SELECT apicount.hit('/tx/nest/c-rolledback');
ROLLBACK TO SAVEPOINT c;
SELECT apicount.hit('/tx/nest/a');
RELEASE SAVEPOINT a;
SELECT apicount.hit('/tx/nest/l1');
COMMIT;

-- a released savepoint inside one that is rolled back is lost with it
BEGIN;
SELECT apicount.hit('/tx/nest2/kept');
SAVEPOINT a;
SELECT apicount.hit('/tx/nest2/lost');
SAVEPOINT b;
SELECT apicount.hit('/tx/nest2/lost');
RELEASE SAVEPOINT b;
ROLLBACK TO SAVEPOINT a;
COMMIT;

-- hits only at levels 2 and 4 (levels 1 and 3 record nothing), all released
BEGIN;
SAVEPOINT a;
SELECT apicount.hit('/tx/deep/level2');
SAVEPOINT b;
SAVEPOINT c;
SELECT apicount.hit('/tx/deep/level4');
RELEASE SAVEPOINT c;
RELEASE SAVEPOINT b;
SAVEPOINT d;
RELEASE SAVEPOINT d;
RELEASE SAVEPOINT a;
COMMIT;

-- the same, but the top level rolls back
BEGIN;
SAVEPOINT a;
SELECT apicount.hit('/tx/deep/rolledback');
SAVEPOINT b;
SAVEPOINT c;
SELECT apicount.hit('/tx/deep/rolledback');
RELEASE SAVEPOINT c;
RELEASE SAVEPOINT a;
ROLLBACK;

-- one key recorded at several levels
BEGIN;
SELECT apicount.hit('/tx/samekey');
SAVEPOINT a;
SELECT apicount.hit('/tx/samekey');
SAVEPOINT b;
SELECT apicount.hit('/tx/samekey');
RELEASE SAVEPOINT b;
RELEASE SAVEPOINT a;
SAVEPOINT c;
SELECT apicount.hit('/tx/samekey');
ROLLBACK TO SAVEPOINT c;
COMMIT;

-- PL/pgSQL exception blocks are subtransactions
DO $$
BEGIN
	PERFORM apicount.hit('/tx/plpgsql/kept');
	BEGIN
		PERFORM apicount.hit('/tx/plpgsql/lost');
		INSERT INTO apicount.requests (path) VALUES ('/tx/plpgsql/lost');
		RAISE EXCEPTION 'boom';
	EXCEPTION WHEN raise_exception THEN
		PERFORM apicount.hit('/tx/plpgsql/handler');
	END;
	BEGIN
		PERFORM apicount.hit('/tx/plpgsql/no-error');
	EXCEPTION WHEN OTHERS THEN
		RAISE NOTICE 'not reached';
	END;
	PERFORM apicount.hit('/tx/plpgsql/kept');
END
$$;
-- per-row exception handling: the rows that failed validation are skipped
DO $$
BEGIN
	FOR i IN 1..10 LOOP
		BEGIN
			PERFORM apicount.hit('/tx/plpgsql/loop', status => CASE WHEN i % 3 = 0 THEN 999 ELSE 200 END);
		EXCEPTION WHEN numeric_value_out_of_range THEN
			NULL;
		END;
	END LOOP;
END
$$;
-- an exception that escapes the block aborts everything
\set VERBOSITY sqlstate
DO $$
BEGIN
	PERFORM apicount.hit('/tx/plpgsql/escaped');
	BEGIN
		PERFORM apicount.hit('/tx/plpgsql/escaped');
		RAISE EXCEPTION 'boom';
	EXCEPTION WHEN division_by_zero THEN
		NULL;
	END;
END
$$;
\set VERBOSITY default

-- PREPARE TRANSACTION (max_prepared_transactions = 2 in the test config)
-- with pending hits: 0A000, and the transaction is rolled back
BEGIN;
SELECT apicount.hit('/tx/prepare/pending');
\set VERBOSITY sqlstate
PREPARE TRANSACTION 'apicount_regress_1';
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- with hits in a released savepoint: still pending
BEGIN;
SAVEPOINT a;
INSERT INTO apicount.requests (path) VALUES ('/tx/prepare/pending');
RELEASE SAVEPOINT a;
\set VERBOSITY sqlstate
PREPARE TRANSACTION 'apicount_regress_2';
\set VERBOSITY default
-- without hits: works
BEGIN;
SELECT count(*) AS n FROM apicount.requests;
PREPARE TRANSACTION 'apicount_regress_3';
COMMIT PREPARED 'apicount_regress_3';
-- hits only in a rolled-back savepoint or a failed exception block: nothing pending
BEGIN;
SAVEPOINT a;
SELECT apicount.hit('/tx/prepare/rolledback');
ROLLBACK TO SAVEPOINT a;
DO $$
BEGIN
	PERFORM apicount.hit('/tx/prepare/rolledback');
	RAISE EXCEPTION 'boom';
EXCEPTION WHEN raise_exception THEN
	NULL;
END
$$;
PREPARE TRANSACTION 'apicount_regress_4';
ROLLBACK PREPARED 'apicount_regress_4';
SELECT count(*) AS prepared_left FROM pg_prepared_xacts WHERE gid LIKE 'apicount_regress_%';
-- the session is fine after the failed PREPAREs
SELECT apicount.hit('/tx/prepare/after');

-- everything that was committed, and nothing else
SELECT * FROM pg_temp.calls('/tx/%');
SELECT hits - :hits0 AS hits_delta FROM apicount.stats;

-- all of it survives a flush unchanged (rollups + live, never counted twice)
SELECT apicount.flush() >= 0 AS flushed;
SELECT * FROM pg_temp.calls('/tx/%');

--
-- a query function that fails inside an exception block must not keep its
-- read lock: the flush waits for that lock before it commits, so a leaked
-- lock blocks every flush until the transaction ends (and stalls other
-- sessions' query functions queued behind the flush).
-- Fails as of this writing: _read_begin()'s lock is released only at
-- top-level commit/abort, not at subtransaction abort.
--
BEGIN;
DO $$
BEGIN
	-- date_bin() rejects month steps once there are rows to bin
	PERFORM * FROM apicount.series(NULL, now() - interval '1 hour', now() + interval '1 hour', interval '1 month');
	RAISE NOTICE 'series: no error';
EXCEPTION WHEN OTHERS THEN
	RAISE NOTICE 'series: error caught';
END
$$;
DO $$
BEGIN
	-- now() - since overflows once the read has begun
	PERFORM * FROM apicount.top_callers(10, interval '300000 years');
	RAISE NOTICE 'top_callers: no error';
EXCEPTION WHEN OTHERS THEN
	RAISE NOTICE 'top_callers: error caught';
END
$$;
SELECT count(*) AS advisory_locks_held
FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
SELECT apicount.flush() >= 0 AS flush_in_same_transaction;
COMMIT;
SELECT count(*) AS advisory_locks_held
FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
