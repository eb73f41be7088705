/*-------------------------------------------------------------------------
 *
 * backpressure.c
 *	  Writing backends wait while the pageserver lags.
 *
 * The pageserver's progress reaches the compute through the walkeepers:
 * its standby status updates are relayed in AppendResponses, and the
 * walproposer publishes the highest "written" (ingested) LSN in shared
 * memory. With zenith.max_replication_write_lag set (0, the default:
 * never), a client backend that inserts a WAL record ending more than that
 * far ahead of it is throttled: XLogInsert() asks wal_throttle_check_hook
 * after each record (often inside a critical section, so it only notes
 * it), and at the backend's next CHECK_FOR_INTERRUPTS() wal_throttle_hook
 * waits while the compute's flush LSN is that far ahead (core patch 0009).
 * So one statement, a COPY of gigabytes say, waits as it goes, not only at
 * its start. The time spent waiting is in pg_stat_activity as wait event
 * type Extension.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xloginsert.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/wait_event.h"

#include "pagestore.h"
#include "walproposer.h"

typedef struct WalProposerShared
{
	slock_t		mutex;
	bool		known;			/* feedback received since start */
	XLogRecPtr	ps_writelsn;
	XLogRecPtr	ps_flushlsn;
	XLogRecPtr	ps_applylsn;
	/* ps_writelsn, for the check after every WAL record (0: not known) */
	pg_atomic_uint64 written;
} WalProposerShared;

int			zenith_max_replication_write_lag = 0;	/* MB */

static WalProposerShared *wp_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* This backend inserted WAL too far ahead of the pageserver. */
static bool throttle_pending = false;

static void
wp_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(MAXALIGN(sizeof(WalProposerShared)));
}

static void
wp_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	wp_shared = ShmemInitStruct("zenith walproposer", sizeof(WalProposerShared), &found);
	if (!found)
	{
		memset(wp_shared, 0, sizeof(WalProposerShared));
		SpinLockInit(&wp_shared->mutex);
		pg_atomic_init_u64(&wp_shared->written, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
wp_publish_feedback(XLogRecPtr write, XLogRecPtr flush, XLogRecPtr apply)
{
	if (wp_shared == NULL)
		return;
	SpinLockAcquire(&wp_shared->mutex);
	wp_shared->known = true;
	wp_shared->ps_writelsn = Max(wp_shared->ps_writelsn, write);
	wp_shared->ps_flushlsn = Max(wp_shared->ps_flushlsn, flush);
	wp_shared->ps_applylsn = Max(wp_shared->ps_applylsn, apply);
	/* Under the mutex, so it never goes back. */
	pg_atomic_write_u64(&wp_shared->written, wp_shared->ps_writelsn);
	SpinLockRelease(&wp_shared->mutex);
}

/* How far the compute's flush LSN is ahead of what the pageserver has. */
static uint64
write_lag(void)
{
	XLogRecPtr	written;
	bool		known;
	XLogRecPtr	flush;

	SpinLockAcquire(&wp_shared->mutex);
	known = wp_shared->known;
	written = wp_shared->ps_writelsn;
	SpinLockRelease(&wp_shared->mutex);
	if (!known)
		return 0;
	flush = GetFlushRecPtr(NULL);
	return flush > written ? flush - written : 0;
}

/*
 * Wait while the compute's flush LSN is more than the allowed lag ahead of
 * the pageserver. Query cancel and termination are served while waiting.
 */
static void
backpressure(void)
{
	uint64		max;

	if (zenith_max_replication_write_lag <= 0 || wp_shared == NULL || RecoveryInProgress())
		return;
	max = (uint64) zenith_max_replication_write_lag * 1024 * 1024;

	/*
	 * What this backend wrote may still be in the WAL buffers, out of the
	 * pageserver's reach and not counted in the flush LSN: flush it, so
	 * that the lag is measured with it and can be caught up.
	 */
	if (XactLastRecEnd > GetFlushRecPtr(NULL))
		XLogFlush(XactLastRecEnd);
	while (write_lag() > max)
	{
		CHECK_FOR_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/*
 * wal_throttle_check_hook: after every WAL record this process inserts,
 * perhaps in a critical section, so it only decides. Client backends only:
 * the walproposer, checkpointer and autovacuum must keep going.
 */
static bool
wp_wal_throttle_check(XLogRecPtr end)
{
	XLogRecPtr	written;

	if (zenith_max_replication_write_lag <= 0 || wp_shared == NULL ||
		MyBackendType != B_BACKEND)
		return false;
	written = pg_atomic_read_u64(&wp_shared->written);
	if (written == InvalidXLogRecPtr || end <= written ||
		end - written <= (uint64) zenith_max_replication_write_lag * 1024 * 1024)
		return false;
	throttle_pending = true;
	return true;
}

/*
 * wal_throttle_hook: from ProcessInterrupts(), outside critical sections.
 * The wait itself checks for interrupts, which comes back here: not again.
 */
static void
wp_wal_throttle(void)
{
	static bool waiting = false;

	if (!throttle_pending || waiting)
		return;

	/*
	 * Not while a page request is under way (the backend may hold a
	 * buffer's I/O that others wait for) or while waiting for a lock:
	 * the wait happens at a later check, throttle_pending stays set.
	 */
	if (pagestore_request_in_progress() || (MyProc != NULL && MyProc->waitLock != NULL))
		return;
	throttle_pending = false;
	waiting = true;
	PG_TRY();
	{
		backpressure();
	}
	PG_FINALLY();
	{
		waiting = false;
	}
	PG_END_TRY();
}

void
wp_backpressure_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wp_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wp_shmem_startup;
	wal_throttle_check_hook = wp_wal_throttle_check;
	wal_throttle_hook = wp_wal_throttle;
}
