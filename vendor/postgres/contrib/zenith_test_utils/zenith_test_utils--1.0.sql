/* contrib/zenith_test_utils/zenith_test_utils--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION zenith_test_utils" to load this file. \quit

-- A page of a relation as the pageserver has it at request_lsn (NULL: the
-- newest), known unchanged since not_modified_since (NULL: 0/0).
CREATE FUNCTION get_raw_page_at_lsn(rel regclass, fork text, blkno int8,
                                    request_lsn pg_lsn DEFAULT NULL,
                                    not_modified_since pg_lsn DEFAULT NULL)
RETURNS bytea
AS 'MODULE_PATHNAME', 'get_raw_page_at_lsn'
LANGUAGE C PARALLEL UNSAFE;

-- Flush the compute's WAL up to lsn (NULL: everything inserted so far);
-- returns the LSN flushed to.
CREATE FUNCTION zenith_xlogflush(lsn pg_lsn DEFAULT NULL)
RETURNS pg_lsn
AS 'MODULE_PATHNAME', 'zenith_xlogflush'
LANGUAGE C PARALLEL UNSAFE;

-- Assign n transaction ids in the calling transaction (they are never
-- committed), moving the next xid on: SLRU pages get written as they would
-- after n transactions. Not for a primary with hot standbys.
CREATE FUNCTION test_consume_xids(n int8)
RETURNS xid8
AS 'MODULE_PATHNAME', 'test_consume_xids'
LANGUAGE C STRICT PARALLEL UNSAFE;

-- Evict every shared buffer not in use (dirty ones are written out first),
-- so that pages are read again; returns how many were evicted.
CREATE FUNCTION clear_buffer_cache()
RETURNS int8
AS 'MODULE_PATHNAME', 'clear_buffer_cache'
LANGUAGE C STRICT PARALLEL UNSAFE;

REVOKE ALL ON FUNCTION get_raw_page_at_lsn(regclass, text, int8, pg_lsn, pg_lsn) FROM PUBLIC;
REVOKE ALL ON FUNCTION zenith_xlogflush(pg_lsn) FROM PUBLIC;
REVOKE ALL ON FUNCTION test_consume_xids(int8) FROM PUBLIC;
REVOKE ALL ON FUNCTION clear_buffer_cache() FROM PUBLIC;
