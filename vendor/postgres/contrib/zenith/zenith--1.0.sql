/* contrib/zenith/zenith--1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION zenith" to load this file. \quit

-- The size of every database of this compute's timeline, in bytes, as the
-- pageserver has it (relations only; SLRUs and WAL are not counted).
CREATE FUNCTION pg_cluster_size()
RETURNS int8
AS 'MODULE_PATHNAME', 'pg_cluster_size'
LANGUAGE C STRICT PARALLEL UNSAFE;
