/*-------------------------------------------------------------------------
 *
 * pagestore.h
 *	  The pagestream client: pages, relation sizes and existence at an LSN,
 *	  read from the pageserver (docs/pagestream.md).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PAGESTORE_H
#define PAGESTORE_H

#include "access/xlogdefs.h"
#include "lib/stringinfo.h"
#include "common/relpath.h"
#include "storage/block.h"
#include "storage/relfilenode.h"

/* request_lsn of a request for the newest version */
#define ZENITH_LATEST_LSN PG_UINT64_MAX

extern char *zenith_pageserver_connstring;

extern void pagestore_define_gucs(void);
extern bool pagestore_request_in_progress(void);

extern bool zenith_rel_exists(RelFileNode rnode, ForkNumber forknum,
							  XLogRecPtr request_lsn, XLogRecPtr not_modified_since);
extern BlockNumber zenith_rel_nblocks(RelFileNode rnode, ForkNumber forknum,
									  XLogRecPtr request_lsn, XLogRecPtr not_modified_since);
extern int64 zenith_db_size(Oid dbnode, XLogRecPtr request_lsn, XLogRecPtr not_modified_since);

/*
 * One page into buffer (BLCKSZ bytes). Exported for zenith_test_utils,
 * which finds it with load_external_function().
 */
extern PGDLLEXPORT void zenith_read_at_lsn(RelFileNode rnode, ForkNumber forknum,
										   BlockNumber blkno, XLogRecPtr request_lsn,
										   XLogRecPtr not_modified_since, char *buffer);

extern int	zenith_readahead_buffer_size;

/* Read ahead: send the request now, the page is taken by a later read. */
extern void pagestore_prefetch(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
							   XLogRecPtr request_lsn, XLogRecPtr not_modified_since);

/* A page for the storage manager: read ahead earlier, or requested now. */
extern void pagestore_read(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
						   XLogRecPtr request_lsn, XLogRecPtr not_modified_since, char *buffer);

/* pagestore_conn.c: the connection (opened by the first send) */
extern int	zenith_pageserver_retry_timeout;
extern bool ps_conn_send(StringInfo req, char **err);
extern bool ps_conn_receive(StringInfo resp, char **err);
extern void ps_conn_close(void);
extern bool ps_conn_is_open(void);

/* pagestore_smgr.c */
extern void pagestore_smgr_init(void);

/* relsize_cache.c */
typedef enum RelSizeHow
{
	RELSIZE_SET,				/* replace */
	RELSIZE_EXTEND,				/* only raise */
	RELSIZE_EXTEND_LOCAL,		/* raise and pin: extended by this compute */
	RELSIZE_FILL				/* only if not cached */
} RelSizeHow;

extern void relsize_cache_init(void);
extern bool relsize_get(RelFileNode rnode, ForkNumber forknum, BlockNumber *nblocks);
extern bool relsize_set(RelFileNode rnode, ForkNumber forknum, BlockNumber nblocks,
						RelSizeHow how);
extern void relsize_forget(RelFileNode rnode, ForkNumber forknum);

#endif							/* PAGESTORE_H */
