/*-------------------------------------------------------------------------
 *
 * backpressure.c
 *	  Writing backends wait while the pageserver lags.
 *
 * The pageserver's progress reaches the compute through the walkeepers:
 * its standby status updates are relayed in AppendResponses, and the
 * walproposer publishes the highest "written" (ingested) LSN in shared
 * memory. A backend about to run a statement that writes (any DML, and
 * COPY, CREATE TABLE AS, CREATE INDEX, CLUSTER, VACUUM, REFRESH, REINDEX)
 * waits while the compute's flush LSN is more than
 * zenith.max_replication_write_lag ahead of it (0, the default: never).
 * The wait is at statement start: one statement may still write any
 * amount of WAL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/utility.h"
#include "utils/wait_event.h"

#include "walproposer.h"

typedef struct WalProposerShared
{
	slock_t		mutex;
	bool		known;			/* feedback received since start */
	XLogRecPtr	ps_writelsn;
	XLogRecPtr	ps_flushlsn;
	XLogRecPtr	ps_applylsn;
} WalProposerShared;

int			zenith_max_replication_write_lag = 0;	/* MB */

static WalProposerShared *wp_shared = NULL;
static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static ExecutorStart_hook_type prev_ExecutorStart = NULL;
static ProcessUtility_hook_type prev_ProcessUtility = NULL;

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

static void
backpressure(void)
{
	uint64		max;

	if (zenith_max_replication_write_lag <= 0 || wp_shared == NULL || RecoveryInProgress())
		return;
	max = (uint64) zenith_max_replication_write_lag * 1024 * 1024;
	while (write_lag() > max)
	{
		CHECK_FOR_INTERRUPTS();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 10,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

static void
wp_ExecutorStart(QueryDesc *queryDesc, int eflags)
{
	if (queryDesc->operation != CMD_SELECT)
		backpressure();
	if (prev_ExecutorStart)
		prev_ExecutorStart(queryDesc, eflags);
	else
		standard_ExecutorStart(queryDesc, eflags);
}

static void
wp_ProcessUtility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
				  ProcessUtilityContext context, ParamListInfo params,
				  QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	switch (nodeTag(pstmt->utilityStmt))
	{
		case T_CopyStmt:
		case T_CreateTableAsStmt:
		case T_IndexStmt:
		case T_ClusterStmt:
		case T_VacuumStmt:
		case T_RefreshMatViewStmt:
		case T_ReindexStmt:
			backpressure();
			break;
		default:
			break;
	}
	if (prev_ProcessUtility)
		prev_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params, queryEnv, dest, qc);
}

void
wp_backpressure_init(void)
{
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = wp_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = wp_shmem_startup;
	prev_ExecutorStart = ExecutorStart_hook;
	ExecutorStart_hook = wp_ExecutorStart;
	prev_ProcessUtility = ProcessUtility_hook;
	ProcessUtility_hook = wp_ProcessUtility;
}
