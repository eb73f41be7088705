/*-------------------------------------------------------------------------
 *
 * pagestore_smgr.c
 *	  The compute's storage manager: permanent relations live on the
 *	  pageserver, everything else on local disk through md.c.
 *
 * A compute has no files of permanent relations.  A page that is not in
 * shared buffers is read with GetPage@LSN; a page that leaves them is
 * thrown away, since the pageserver rebuilds it from WAL; sizes come from
 * the relation-size cache (relsize_cache.c), filled from the pageserver.
 * Temporary and unlogged relations stay on local disk (they are not in
 * WAL, so the pageserver never has them) and vanish with the compute.
 *
 * The request LSN (docs/compute.md): on a primary, "the newest version, not
 * modified since L", where L is the page's last-written LSN (core
 * xloglastwritten.c): every change after L is still in shared buffers, so
 * any version from L on is the right one.  WAL up to L is flushed first, or
 * the pageserver would wait for WAL that never comes.  On a standby: the
 * replay LSN.
 *
 * The eviction rules: a page must be in WAL before it is thrown away.
 * Visibility-map and free-space-map pages change without WAL, so they are
 * WAL-logged as full-page images whenever they are written (except by the
 * shutdown checkpoint, after which no WAL may be written; the compute's
 * buffers go with it, and an FSM page is only a hint).  Any other dirty
 * page without an LSN would be lost: that is
 * an ERROR, except an all-zero page (a bulk extension) or a page of an
 * index being built without WAL (see the unlogged-build callbacks below).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xloginsert.h"
#include "access/xlogrecovery.h"
#include "access/xloglastwritten.h"
#include "access/xlogutils.h"
#include "catalog/pg_class.h"
#include "catalog/pg_tablespace_d.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/bufpage.h"
#include "storage/smgr.h"
#include "utils/rel.h"

#include "pagestore.h"

static const f_smgr *md = NULL;

/*
 * The index this backend is building without WAL (GIN, GiST, SP-GiST), and
 * how far: 1 = building, every page written goes to a local file; 0 = none.
 */
static RelFileNode build_rnode;
static int	build_phase = 0;

/*
 * Is this fork on local disk (md.c)?  Init forks always are (only unlogged
 * relations have one), and so is everything of a temporary or unlogged
 * relation, and the index this backend is building without WAL.
 */
static bool
is_local(SMgrRelation reln, ForkNumber forknum)
{
	char		persistence = reln->smgr_relpersistence;

	if (forknum == INIT_FORKNUM)
		return true;
	if (persistence == 0)
	{
		/*
		 * Unknown (a size asked by relfilenode, WAL replay): only an
		 * unlogged relation has an init fork.  An unlogged relation is
		 * remembered; a miss is not, as an unlogged index being built gets
		 * its init fork only after its pages.
		 */
		if (md->smgr_exists(reln, INIT_FORKNUM))
			reln->smgr_relpersistence = persistence = RELPERSISTENCE_UNLOGGED;
		else
			persistence = RELPERSISTENCE_PERMANENT;
	}
	if (persistence != RELPERSISTENCE_PERMANENT)
		return true;
	return build_phase == 1 && RelFileNodeEquals(reln->smgr_rnode.node, build_rnode);
}

/*
 * A page without a (real) LSN of a permanent relation that has a local
 * file holding it: an index being built without WAL, written by another
 * process than the builder (a checkpoint, a backend needing the buffer).
 */
static bool
local_build_page(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno, char *buffer)
{
	return PageGetLSN((Page) buffer) < FirstNormalUnloggedLSN && !PageIsNew((Page) buffer) &&
		md->smgr_exists(reln, forknum) && md->smgr_nblocks(reln, forknum) > blkno;
}

/*
 * The LSNs of a request for a page (blkno) or a fork's size or existence
 * (blkno InvalidBlockNumber).
 */
static void
request_lsns(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
			 XLogRecPtr *request_lsn, XLogRecPtr *not_modified_since)
{
	XLogRecPtr	lsn;

	if (RecoveryInProgress())
	{
		lsn = GetXLogReplayRecPtr(NULL);
		*request_lsn = lsn;
		*not_modified_since = lsn;
		return;
	}
	lsn = GetLastWrittenLSN(rnode, forknum, blkno);

	/*
	 * A record that ends exactly at a page boundary: the insert position
	 * points past the next page's header, which the pageserver never
	 * reaches until more WAL comes.
	 */
	if (lsn % XLOG_BLCKSZ == SizeOfXLogShortPHD &&
		XLogSegmentOffset(lsn, wal_segment_size) > XLOG_BLCKSZ)
		lsn -= SizeOfXLogShortPHD;
	else if (lsn % XLOG_BLCKSZ == SizeOfXLogLongPHD &&
			 XLogSegmentOffset(lsn, wal_segment_size) < XLOG_BLCKSZ)
		lsn -= SizeOfXLogLongPHD;
	/* WAL before data: the pageserver must be able to get there. */
	if (lsn > GetFlushRecPtr(NULL))
		XLogFlush(lsn);
	*request_lsn = ZENITH_LATEST_LSN;
	*not_modified_since = lsn;
}

/*
 * A page leaves shared buffers (write) or is added (extend): make sure the
 * pageserver can rebuild it, and return the LSN it will be known at.
 */
static XLogRecPtr
wallog_page(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno, char *buffer)
{
	XLogRecPtr	lsn = PageGetLSN((Page) buffer);

	if ((forknum == FSM_FORKNUM || forknum == VISIBILITYMAP_FORKNUM) &&
		!RecoveryInProgress() &&
		!(MyBackendType == B_CHECKPOINTER && ShutdownRequestPending))
	{
		/* A copy: the caller's buffer may be a shared buffer, share-locked. */
		PGAlignedBlock copy;

		memcpy(copy.data, buffer, BLCKSZ);
		lsn = log_newpage(&reln->smgr_rnode.node, forknum, blkno, copy.data, false);
		return lsn;
	}
	if (lsn >= FirstNormalUnloggedLSN)
		return lsn;
	/* No (real) LSN: an extension with zeros, or a page never WAL-logged. */
	if (!PageIsNew((Page) buffer) && forknum != FSM_FORKNUM &&
		forknum != VISIBILITYMAP_FORKNUM && !RecoveryInProgress())
	{
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("page %u of relation %u/%u/%u fork %d was evicted without WAL (LSN %X/%X)",
						blkno, reln->smgr_rnode.node.spcNode, reln->smgr_rnode.node.dbNode,
						reln->smgr_rnode.node.relNode, forknum, LSN_FORMAT_ARGS(lsn)),
				 errdetail("A compute keeps no relation files: a page not in WAL would be lost.")));
	}
	return RecoveryInProgress() ? GetXLogReplayRecPtr(NULL) : GetXLogInsertRecPtr();
}

static void
zenith_open(SMgrRelation reln)
{
	md->smgr_open(reln);
}

static void
zenith_close(SMgrRelation reln, ForkNumber forknum)
{
	md->smgr_close(reln, forknum);
}

static void
zenith_create(SMgrRelation reln, ForkNumber forknum, bool isRedo)
{
	BlockNumber n;

	if (is_local(reln, forknum))
	{
		md->smgr_create(reln, forknum, isRedo);
		return;
	}

	/*
	 * Nothing to create: the pageserver learns about the fork from the WAL
	 * record of its creation.  An existing fork keeps its size.  In a
	 * tablespace other than the default ones, an empty local file marks the
	 * fork, so that DROP TABLESPACE, which looks for files, finds the
	 * tablespace in use (md.c removes it with the relation).
	 */
	if (forknum == MAIN_FORKNUM &&
		reln->smgr_rnode.node.spcNode != DEFAULTTABLESPACE_OID &&
		reln->smgr_rnode.node.spcNode != GLOBALTABLESPACE_OID)
		md->smgr_create(reln, forknum, isRedo);
	if ((!relsize_get(reln->smgr_rnode.node, forknum, &n) || n == InvalidBlockNumber) &&
		!relsize_set(reln->smgr_rnode.node, forknum, 0, RELSIZE_SET))
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("the relation size cache is full of relations extended by this compute"),
				 errhint("Raise zenith.relsize_hash_size.")));
}

static bool
zenith_exists(SMgrRelation reln, ForkNumber forknum)
{
	BlockNumber n;
	XLogRecPtr	request_lsn,
				nms;
	bool		exists;

	if (is_local(reln, forknum))
		return md->smgr_exists(reln, forknum);
	if (relsize_get(reln->smgr_rnode.node, forknum, &n))
		return n != InvalidBlockNumber;
	/* Relation 0/0/0 stands for "no relation" in some callers. */
	if (reln->smgr_rnode.node.relNode == InvalidOid)
		return false;
	request_lsns(reln->smgr_rnode.node, forknum, InvalidBlockNumber, &request_lsn, &nms);
	exists = zenith_rel_exists(reln->smgr_rnode.node, forknum, request_lsn, nms);
	if (!exists)
		relsize_set(reln->smgr_rnode.node, forknum, InvalidBlockNumber, RELSIZE_FILL);
	return exists;
}

static void
zenith_unlink(RelFileNodeBackend rnode, ForkNumber forknum, bool isRedo)
{
	/* Local files (an unlogged relation, an unfinished build), if any. */
	md->smgr_unlink(rnode, forknum, isRedo);
	if (!RelFileNodeBackendIsTemp(rnode))
	{
		if (forknum == InvalidForkNumber)
		{
			for (ForkNumber f = 0; f <= MAX_FORKNUM; f++)
				relsize_forget(rnode.node, f);
		}
		else
			relsize_forget(rnode.node, forknum);
		if (build_phase != 0 && RelFileNodeEquals(rnode.node, build_rnode))
			build_phase = 0;
	}
}

static void
zenith_extend(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno, char *buffer,
			  bool skipFsync)
{
	XLogRecPtr	lsn;

	if (is_local(reln, forknum))
	{
		md->smgr_extend(reln, forknum, blkno, buffer, skipFsync);
		return;
	}
	lsn = wallog_page(reln, forknum, blkno, buffer);
	if (!relsize_set(reln->smgr_rnode.node, forknum, blkno + 1, RELSIZE_EXTEND_LOCAL) &&
		!RecoveryInProgress() && PageGetLSN((Page) buffer) < FirstNormalUnloggedLSN &&
		forknum != FSM_FORKNUM && forknum != VISIBILITYMAP_FORKNUM)
	{
		/*
		 * No room to remember a size the pageserver cannot know yet: tell
		 * it, with the page as it is now (all zeros, normally).
		 */
		PGAlignedBlock copy;

		memcpy(copy.data, buffer, BLCKSZ);
		lsn = log_newpage(&reln->smgr_rnode.node, forknum, blkno, copy.data, false);
	}
	SetLastWrittenLSNForBlock(lsn, reln->smgr_rnode.node, forknum, blkno);
	SetLastWrittenLSNForRelation(lsn, reln->smgr_rnode.node, forknum);
}

static bool
zenith_prefetch(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno)
{
	XLogRecPtr	request_lsn,
				nms;

	if (is_local(reln, forknum))
		return md->smgr_prefetch(reln, forknum, blkno);
	request_lsns(reln->smgr_rnode.node, forknum, blkno, &request_lsn, &nms);
	pagestore_prefetch(reln->smgr_rnode.node, forknum, blkno, request_lsn, nms);
	return true;
}

static void
zenith_read(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno, char *buffer)
{
	XLogRecPtr	request_lsn,
				nms;

	if (is_local(reln, forknum))
	{
		md->smgr_read(reln, forknum, blkno, buffer);
		return;
	}
	request_lsns(reln->smgr_rnode.node, forknum, blkno, &request_lsn, &nms);
	pagestore_read(reln->smgr_rnode.node, forknum, blkno, request_lsn, nms, buffer);
}

static void
zenith_write(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno, char *buffer,
			 bool skipFsync)
{
	XLogRecPtr	lsn;

	if (is_local(reln, forknum) || local_build_page(reln, forknum, blkno, buffer))
	{
		md->smgr_write(reln, forknum, blkno, buffer, skipFsync);
		return;
	}
	/* The page is thrown away: from now on it is read back at this LSN. */
	lsn = wallog_page(reln, forknum, blkno, buffer);
	SetLastWrittenLSNForBlock(lsn, reln->smgr_rnode.node, forknum, blkno);
}

static void
zenith_writeback(SMgrRelation reln, ForkNumber forknum, BlockNumber blkno,
				 BlockNumber nblocks)
{
	if (is_local(reln, forknum))
		md->smgr_writeback(reln, forknum, blkno, nblocks);
}

static BlockNumber
zenith_nblocks(SMgrRelation reln, ForkNumber forknum)
{
	BlockNumber n;
	XLogRecPtr	request_lsn,
				nms;

	if (is_local(reln, forknum))
		return md->smgr_nblocks(reln, forknum);
	if (relsize_get(reln->smgr_rnode.node, forknum, &n))
	{
		if (n == InvalidBlockNumber)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("could not get the size of relation %u/%u/%u fork %d: it does not exist",
							reln->smgr_rnode.node.spcNode, reln->smgr_rnode.node.dbNode,
							reln->smgr_rnode.node.relNode, forknum)));
		return n;
	}
	request_lsns(reln->smgr_rnode.node, forknum, InvalidBlockNumber, &request_lsn, &nms);
	n = zenith_rel_nblocks(reln->smgr_rnode.node, forknum, request_lsn, nms);
	relsize_set(reln->smgr_rnode.node, forknum, n, RELSIZE_EXTEND);
	/* An extension may have raced with the request: the cache has the larger. */
	(void) relsize_get(reln->smgr_rnode.node, forknum, &n);
	return n;
}

static void
zenith_truncate(SMgrRelation reln, ForkNumber forknum, BlockNumber old_blocks,
				BlockNumber nblocks)
{
	XLogRecPtr	lsn;

	if (is_local(reln, forknum))
	{
		md->smgr_truncate(reln, forknum, old_blocks, nblocks);
		return;
	}
	relsize_set(reln->smgr_rnode.node, forknum, nblocks, RELSIZE_SET);

	/*
	 * The truncation's WAL record was inserted just before; its end is not
	 * known here, the insert position is past it.
	 */
	lsn = RecoveryInProgress() ? GetXLogReplayRecPtr(NULL) : GetXLogInsertRecPtr();
	SetLastWrittenLSNForRelation(lsn, reln->smgr_rnode.node, forknum);
}

static void
zenith_immedsync(SMgrRelation reln, ForkNumber forknum)
{
	if (is_local(reln, forknum))
		md->smgr_immedsync(reln, forknum);
}

/*
 * Unlogged index builds.  Phase 1 (start .. finish_phase_1): the index is
 * built in shared buffers without WAL; pages evicted meanwhile go to a local
 * file, read back from there.  At the end of phase 1 the access method has
 * WAL-logged every page, so from then on the index is an ordinary permanent
 * relation: its size goes to the cache, reads wait for all that WAL, and the
 * local file is removed.
 */
static void
zenith_start_unlogged_build(SMgrRelation reln)
{
	if (is_local(reln, MAIN_FORKNUM) || RecoveryInProgress())
		return;
	if (build_phase != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("an unlogged index build is already in progress in this backend")));
	build_rnode = reln->smgr_rnode.node;
	build_phase = 1;
	/* (A relation in another tablespace has its empty marker file already.) */
	if (!md->smgr_exists(reln, MAIN_FORKNUM))
		md->smgr_create(reln, MAIN_FORKNUM, false);
}

static void
zenith_finish_unlogged_build_phase_1(SMgrRelation reln)
{
	BlockNumber n;

	if (build_phase != 1 || !RelFileNodeEquals(reln->smgr_rnode.node, build_rnode))
		return;
	n = md->smgr_nblocks(reln, MAIN_FORKNUM);
	build_phase = 0;
	relsize_set(reln->smgr_rnode.node, MAIN_FORKNUM, n, RELSIZE_SET);
	SetLastWrittenLSNForRelation(GetXLogInsertRecPtr(), reln->smgr_rnode.node, MAIN_FORKNUM);
	build_phase = 2;
}

static void
zenith_end_unlogged_build(SMgrRelation reln)
{
	if (build_phase != 2 || !RelFileNodeEquals(reln->smgr_rnode.node, build_rnode))
		return;
	build_phase = 0;

	/*
	 * md.c empties the local file now and removes it at the next
	 * checkpoint, cancelling the fsync requests its writes queued.  In a
	 * tablespace other than the default ones, the emptied file stays as
	 * the relation's marker (see zenith_create).
	 */
	if (reln->smgr_rnode.node.spcNode != DEFAULTTABLESPACE_OID &&
		reln->smgr_rnode.node.spcNode != GLOBALTABLESPACE_OID)
		md->smgr_truncate(reln, MAIN_FORKNUM, md->smgr_nblocks(reln, MAIN_FORKNUM), 0);
	else
	{
		md->smgr_close(reln, MAIN_FORKNUM);
		md->smgr_unlink(reln->smgr_rnode, MAIN_FORKNUM, false);
	}
}

/* An aborted build leaves no state behind (its relation is dropped). */
static void
build_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		build_phase = 0;
}

static int64
zenith_dbsize(Oid dbnode)
{
	RelFileNode rnode;
	XLogRecPtr	request_lsn,
				nms;

	rnode.spcNode = InvalidOid;
	rnode.dbNode = dbnode;
	rnode.relNode = InvalidOid;
	request_lsns(rnode, MAIN_FORKNUM, InvalidBlockNumber, &request_lsn, &nms);
	return zenith_db_size(dbnode, request_lsn, nms);
}

static const f_smgr zenith_smgr = {
	.smgr_init = NULL,
	.smgr_shutdown = NULL,
	.smgr_open = zenith_open,
	.smgr_close = zenith_close,
	.smgr_create = zenith_create,
	.smgr_exists = zenith_exists,
	.smgr_unlink = zenith_unlink,
	.smgr_extend = zenith_extend,
	.smgr_prefetch = zenith_prefetch,
	.smgr_read = zenith_read,
	.smgr_write = zenith_write,
	.smgr_writeback = zenith_writeback,
	.smgr_nblocks = zenith_nblocks,
	.smgr_truncate = zenith_truncate,
	.smgr_immedsync = zenith_immedsync,
	.smgr_start_unlogged_build = zenith_start_unlogged_build,
	.smgr_finish_unlogged_build_phase_1 = zenith_finish_unlogged_build_phase_1,
	.smgr_end_unlogged_build = zenith_end_unlogged_build,
};

static const f_smgr *
zenith_smgr_hook(RelFileNodeBackend rnode)
{
	/* Temporary relations never get here (smgropen keeps them on md.c). */
	return &zenith_smgr;
}

/*
 * From _PG_init, in the postmaster: this compute's relations live on the
 * pageserver.
 */
void
pagestore_smgr_init(void)
{
	RelFileNodeBackend any = {{0, 0, 0}, InvalidBackendId};

	md = smgr_standard(any);
	relsize_cache_init();
	smgr_hook = zenith_smgr_hook;
	dbsize_hook = zenith_dbsize;
	RegisterXactCallback(build_xact_callback, NULL);
}
