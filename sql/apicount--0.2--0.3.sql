/* apicount 0.2 -> 0.3: positions of shipped access logs (apicount-ship) */
\echo Use "CREATE EXTENSION apicount" or "ALTER EXTENSION apicount UPDATE" to load this file. \quit

-- the flushed positions, written by the worker in the same transaction as
-- the rollups that hold the lines they cover (src/sources.c)
CREATE TABLE @extschema@._sources (
	name        text PRIMARY KEY,
	file_id     text NOT NULL,
	file_offset bigint NOT NULL,
	lines       bigint NOT NULL,
	rejected    bigint NOT NULL,
	updated_at  timestamptz NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('@extschema@._sources', '');

CREATE FUNCTION @extschema@.ship_position(
	source text, file_id text, file_offset bigint, lines bigint, rejected bigint,
	prev_file_id text, prev_offset bigint)
RETURNS void
AS 'MODULE_PATHNAME', 'apicount_ship_position'
LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION @extschema@.ship_position(text, text, bigint, bigint, bigint, text, bigint) IS
'apicount-ship: the position a transaction ships up to; commits with its hits';

CREATE FUNCTION @extschema@._live_sources(
	OUT name text, OUT file_id text, OUT file_offset bigint, OUT lines bigint,
	OUT rejected bigint, OUT updated_at timestamptz, OUT flushed boolean)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'apicount_live_sources'
LANGUAGE C VOLATILE PARALLEL RESTRICTED;

-- the latest committed position of each source: from shared memory where
-- it has changed since the server started, else as flushed.  The live
-- positions are read once, before the table (slots are never removed
-- while the server runs, so a source without one was not shipped since).
CREATE VIEW @extschema@.sources AS
WITH l AS MATERIALIZED (SELECT * FROM @extschema@._live_sources())
SELECT l.name, l.file_id, l.file_offset, l.lines, l.rejected, l.updated_at, l.flushed
FROM l
UNION ALL
SELECT s.name, s.file_id, s.file_offset, s.lines, s.rejected, s.updated_at, true
FROM @extschema@._sources s
WHERE NOT EXISTS (SELECT FROM l WHERE l.name OPERATOR(pg_catalog.=) s.name);

REVOKE ALL ON @extschema@._sources, @extschema@.sources FROM PUBLIC;
REVOKE ALL ON FUNCTION @extschema@.ship_position(text, text, bigint, bigint, bigint, text, bigint),
	@extschema@._live_sources() FROM PUBLIC;
-- a shipper needs apicount_writer alone: COPY into requests, its position
GRANT EXECUTE ON FUNCTION @extschema@.ship_position(text, text, bigint, bigint, bigint, text, bigint)
	TO apicount_writer;
GRANT SELECT ON @extschema@._sources TO apicount_writer;
GRANT SELECT ON @extschema@.sources TO apicount_writer, apicount_reader;
GRANT EXECUTE ON FUNCTION @extschema@._live_sources() TO apicount_writer, apicount_reader;
