/*-------------------------------------------------------------------------
 *
 * relsize_cache.c
 *	  The sizes of permanent relation forks, shared by all backends.
 *
 * A compute has no relation files to stat, and asking the pageserver for a
 * relation's size on every smgrnblocks() would cost a round trip each time
 * (and the pageserver learns of an extension only from the WAL that fills
 * the new page, which may come much later).  So the compute's own view of
 * each fork's size lives here: set when the fork is created, extended or
 * truncated, and filled from the pageserver on first use; a fork known not
 * to exist is cached too (InvalidBlockNumber).
 *
 * The table holds zenith.relsize_hash_size entries, in LRU order.  A fork
 * this compute extended is pinned: the pageserver learns of an extension
 * only from WAL that fills the new block, so such a size may be known here
 * only (it is forgotten when the fork is dropped).  Another entry that must
 * make room is forgotten after its relation's last-written LSN is raised to
 * the current insert position, so the next size request waits for all WAL
 * so far: the pageserver then knows the fork's creation and truncations.
 * When every entry is pinned, nothing new is cached: the caller says what
 * to do (the storage manager WAL-logs the extended page instead).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/xlog.h"
#include "access/xloglastwritten.h"
#include "lib/ilist.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/hsearch.h"

#include "pagestore.h"

typedef struct RelSizeKey
{
	RelFileNode rnode;
	ForkNumber	forknum;
} RelSizeKey;

typedef struct RelSizeEntry
{
	RelSizeKey	key;			/* hash key: must be first */
	BlockNumber nblocks;		/* InvalidBlockNumber: does not exist */
	bool		pinned;			/* extended by this compute: never evicted */
	dlist_node	lru;			/* newest at head */
} RelSizeEntry;

typedef struct RelSizeShared
{
	LWLock	   *lock;
	int			nentries;
	dlist_head	lru;
} RelSizeShared;

static int	relsize_hash_size = 65536;
static RelSizeShared *rs_shared = NULL;
static HTAB *rs_hash = NULL;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
relsize_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(RelSizeShared)) +
						   hash_estimate_size(relsize_hash_size, sizeof(RelSizeEntry)));
	RequestNamedLWLockTranche("zenith_relsize", 1);
}

static void
relsize_shmem_startup(void)
{
	bool		found;
	HASHCTL		info;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rs_shared = ShmemInitStruct("zenith relsize", sizeof(RelSizeShared), &found);
	if (!found)
	{
		rs_shared->lock = &(GetNamedLWLockTranche("zenith_relsize"))->lock;
		rs_shared->nentries = 0;
		dlist_init(&rs_shared->lru);
	}
	info.keysize = sizeof(RelSizeKey);
	info.entrysize = sizeof(RelSizeEntry);
	rs_hash = ShmemInitHash("zenith relsize cache", relsize_hash_size, relsize_hash_size,
							&info, HASH_ELEM | HASH_BLOBS);
	LWLockRelease(AddinShmemInitLock);
}

void
relsize_cache_init(void)
{
	DefineCustomIntVariable("zenith.relsize_hash_size",
							"How many relation fork sizes the compute remembers.",
							NULL,
							&relsize_hash_size,
							65536, 64, INT_MAX / 64,
							PGC_POSTMASTER,
							0,
							NULL, NULL, NULL);
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = relsize_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = relsize_shmem_startup;
}

static void
make_key(RelSizeKey *key, RelFileNode rnode, ForkNumber forknum)
{
	MemSet(key, 0, sizeof(*key));
	key->rnode = rnode;
	key->forknum = forknum;
}

/* The cached size; false if not cached. */
bool
relsize_get(RelFileNode rnode, ForkNumber forknum, BlockNumber *nblocks)
{
	RelSizeKey	key;
	RelSizeEntry *e;
	bool		found = false;

	make_key(&key, rnode, forknum);
	LWLockAcquire(rs_shared->lock, LW_SHARED);
	e = hash_search(rs_hash, &key, HASH_FIND, NULL);
	if (e != NULL)
	{
		*nblocks = e->nblocks;
		found = true;
	}
	LWLockRelease(rs_shared->lock);
	return found;
}

/*
 * Make room for one entry: forget the least recently used one that is not
 * pinned.  false if all are.  Caller holds the lock exclusively.
 */
static bool
make_room(void)
{
	dlist_iter	it;

	dlist_reverse_foreach(it, &rs_shared->lru)
	{
		RelSizeEntry *victim = dlist_container(RelSizeEntry, lru, it.cur);

		if (victim->pinned)
			continue;
		/* See the header comment: later size requests wait for WAL so far. */
		SetLastWrittenLSNForRelation(GetXLogInsertRecPtr(), victim->key.rnode,
									 victim->key.forknum);
		dlist_delete(&victim->lru);
		hash_search(rs_hash, &victim->key, HASH_REMOVE, NULL);
		rs_shared->nentries--;
		return true;
	}
	return false;
}

/*
 * Cache a size. how: RELSIZE_SET replaces, RELSIZE_EXTEND only raises (a
 * concurrent truncation is serialized by the relation's locks, extension by
 * the extension lock, but a size read from the pageserver may race with an
 * extension), RELSIZE_EXTEND_LOCAL raises and pins (this compute extended
 * the fork), RELSIZE_FILL caches only if not cached already.  Returns
 * whether the size is cached now.
 */
bool
relsize_set(RelFileNode rnode, ForkNumber forknum, BlockNumber nblocks, RelSizeHow how)
{
	RelSizeKey	key;
	RelSizeEntry *e;
	bool		found;

	make_key(&key, rnode, forknum);
	LWLockAcquire(rs_shared->lock, LW_EXCLUSIVE);
	e = hash_search(rs_hash, &key, HASH_FIND, NULL);
	if (e == NULL && rs_shared->nentries >= relsize_hash_size && !make_room())
	{
		LWLockRelease(rs_shared->lock);
		return false;
	}
	e = hash_search(rs_hash, &key, HASH_ENTER_NULL, &found);
	if (e == NULL)
	{
		LWLockRelease(rs_shared->lock);
		return false;
	}
	if (!found)
	{
		e->nblocks = nblocks;
		e->pinned = false;
		rs_shared->nentries++;
	}
	else
	{
		dlist_delete(&e->lru);
		if (how == RELSIZE_SET ||
			((how == RELSIZE_EXTEND || how == RELSIZE_EXTEND_LOCAL) &&
			 (e->nblocks == InvalidBlockNumber || e->nblocks < nblocks)))
			e->nblocks = nblocks;
	}
	if (how == RELSIZE_EXTEND_LOCAL)
		e->pinned = true;
	dlist_push_head(&rs_shared->lru, &e->lru);
	LWLockRelease(rs_shared->lock);
	return true;
}

void
relsize_forget(RelFileNode rnode, ForkNumber forknum)
{
	RelSizeKey	key;
	RelSizeEntry *e;

	make_key(&key, rnode, forknum);
	LWLockAcquire(rs_shared->lock, LW_EXCLUSIVE);
	e = hash_search(rs_hash, &key, HASH_FIND, NULL);
	if (e != NULL)
	{
		dlist_delete(&e->lru);
		hash_search(rs_hash, &key, HASH_REMOVE, NULL);
		rs_shared->nentries--;
	}
	LWLockRelease(rs_shared->lock);
}
