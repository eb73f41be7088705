/*-------------------------------------------------------------------------
 *
 * zenith_test_utils.c
 *	  SQL functions for tests of Zenith computes.
 *
 * get_raw_page_at_lsn() reads a page as the pageserver has it at any LSN,
 * through the zenith extension's pagestream client (found with
 * load_external_function(), so zenith must be installed; it need not be
 * preloaded); zenith_xlogflush() flushes the compute's WAL;
 * test_consume_xids() moves the next transaction id on;
 * clear_buffer_cache() evicts every shared buffer it can, so that pages are
 * read again (from the pageserver, on a compute). All are for superusers
 * only (the install script revokes them from PUBLIC).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/relation.h"
#include "access/transam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_class.h"
#include "common/relpath.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/bufmgr.h"
#include "utils/builtins.h"
#include "utils/pg_lsn.h"
#include "utils/rel.h"
#include "utils/xid8.h"

#include "pagestore.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(get_raw_page_at_lsn);
PG_FUNCTION_INFO_V1(zenith_xlogflush);
PG_FUNCTION_INFO_V1(test_consume_xids);
PG_FUNCTION_INFO_V1(clear_buffer_cache);

typedef void (*read_at_lsn_type) (RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
								  XLogRecPtr request_lsn, XLogRecPtr not_modified_since,
								  char *buffer);

static read_at_lsn_type read_at_lsn = NULL;

/*
 * get_raw_page_at_lsn(rel regclass, fork text, blkno int8,
 *					   request_lsn pg_lsn, not_modified_since pg_lsn) -> bytea
 *
 * NULL request_lsn: the newest version; NULL not_modified_since: 0/0.
 */
Datum
get_raw_page_at_lsn(PG_FUNCTION_ARGS)
{
	Oid			relid;
	char	   *forkname;
	int64		blkno;
	XLogRecPtr	request_lsn;
	XLogRecPtr	not_modified_since;
	ForkNumber	forknum;
	Relation	rel;
	bytea	   *raw_page;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to read raw pages from the pageserver")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		PG_RETURN_NULL();
	relid = PG_GETARG_OID(0);
	forkname = text_to_cstring(PG_GETARG_TEXT_PP(1));
	blkno = PG_GETARG_INT64(2);
	request_lsn = PG_ARGISNULL(3) ? ZENITH_LATEST_LSN : PG_GETARG_LSN(3);
	not_modified_since = PG_ARGISNULL(4) ? InvalidXLogRecPtr : PG_GETARG_LSN(4);

	if (blkno < 0 || blkno > MaxBlockNumber)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid block number %lld", (long long) blkno)));
	forknum = forkname_to_number(forkname);

	rel = relation_open(relid, AccessShareLock);
	if (!RELKIND_HAS_STORAGE(rel->rd_rel->relkind))
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("cannot get raw page from relation \"%s\"",
						RelationGetRelationName(rel)),
				 errdetail_relkind_not_supported(rel->rd_rel->relkind)));
	if (rel->rd_rel->relpersistence != RELPERSISTENCE_PERMANENT)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("relation \"%s\" is not permanent: its pages are not in the pageserver",
						RelationGetRelationName(rel))));

	if (read_at_lsn == NULL)
		read_at_lsn = (read_at_lsn_type)
			load_external_function("$libdir/zenith", "zenith_read_at_lsn", true, NULL);

	raw_page = (bytea *) palloc(BLCKSZ + VARHDRSZ);
	SET_VARSIZE(raw_page, BLCKSZ + VARHDRSZ);
	read_at_lsn(rel->rd_node, forknum, (BlockNumber) blkno, request_lsn, not_modified_since,
				VARDATA(raw_page));
	relation_close(rel, AccessShareLock);
	PG_RETURN_BYTEA_P(raw_page);
}

/*
 * zenith_xlogflush(lsn pg_lsn DEFAULT NULL) -> pg_lsn
 */
Datum
zenith_xlogflush(PG_FUNCTION_ARGS)
{
	XLogRecPtr	insert;
	XLogRecPtr	lsn;

	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("recovery is in progress"),
				 errhint("WAL cannot be flushed during recovery.")));
	insert = GetXLogInsertRecPtr();
	lsn = PG_ARGISNULL(0) ? insert : PG_GETARG_LSN(0);
	if (lsn > insert)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot flush WAL to %X/%X, beyond the insert position %X/%X",
						LSN_FORMAT_ARGS(lsn), LSN_FORMAT_ARGS(insert))));
	XLogFlush(lsn);
	PG_RETURN_LSN(lsn);
}

/*
 * test_consume_xids(n int8) -> xid8: the last xid assigned (NULL for 0).
 *
 * The xids are assigned as subtransaction ids that are never WAL-logged
 * nor committed: they end up aborted. Not for a primary with hot
 * standbys: a standby would add the whole gap to its known-assigned xids.
 */
Datum
test_consume_xids(PG_FUNCTION_ARGS)
{
	int64		n = PG_GETARG_INT64(0);
	FullTransactionId last = InvalidFullTransactionId;

	if (n < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot consume %lld transaction ids", (long long) n)));
	if (RecoveryInProgress())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("recovery is in progress"),
				 errhint("Transaction ids cannot be assigned during recovery.")));
	(void) GetTopTransactionId();
	for (int64 i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		last = GetNewTransactionId(true);
	}
	if (!FullTransactionIdIsValid(last))
		PG_RETURN_NULL();
	PG_RETURN_FULLTRANSACTIONID(last);
}

/*
 * clear_buffer_cache() -> int8
 *
 * Evict every shared buffer that is not pinned (dirty ones are written out
 * first, through the storage manager, as any eviction would). Returns how
 * many were evicted; buffers in use by someone are left alone.
 */
Datum
clear_buffer_cache(PG_FUNCTION_ARGS)
{
	int64		evicted = 0;

	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("must be superuser to clear the buffer cache")));
	for (Buffer b = 1; b <= NBuffers; b++)
	{
		CHECK_FOR_INTERRUPTS();
		if (EvictUnpinnedBuffer(b))
			evicted++;
	}
	PG_RETURN_INT64(evicted);
}
