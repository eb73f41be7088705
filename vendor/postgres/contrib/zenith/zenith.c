/*-------------------------------------------------------------------------
 *
 * zenith.c
 *	  Entry point of contrib/zenith: configuration, the walproposer
 *	  background worker, backpressure, and the pagestream client.
 *
 * The library must be in shared_preload_libraries: the walproposer is a
 * background worker registered at postmaster start, and a compute whose
 * commits do not wait for the walkeepers must not start as one that does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "catalog/pg_database.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/smgr.h"
#include "utils/guc.h"

#include "pagestore.h"
#include "walproposer.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

PG_FUNCTION_INFO_V1(pg_cluster_size);

char	   *zenith_walkeepers = NULL;
char	   *zenith_tenant_id = NULL;
char	   *zenith_timeline_id = NULL;
int			zenith_walkeeper_reconnect_timeout = 1000;
int			zenith_walkeeper_connect_timeout = 10000;

void
_PG_init(void)
{
	DefineCustomStringVariable("zenith.walkeepers",
							   "The walkeepers of this compute's timeline, host:port,host:port,...",
							   "Empty: no walproposer (commits do not wait for walkeepers).",
							   &zenith_walkeepers,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("zenith.tenant_id",
							   "The tenant of this compute's timeline (32 hex digits).",
							   NULL,
							   &zenith_tenant_id,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	DefineCustomStringVariable("zenith.timeline_id",
							   "The timeline this compute writes (32 hex digits).",
							   NULL,
							   &zenith_timeline_id,
							   "",
							   PGC_POSTMASTER,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("zenith.walkeeper_reconnect_timeout",
							"How long to wait before reconnecting to a walkeeper that went away.",
							NULL,
							&zenith_walkeeper_reconnect_timeout,
							1000, 10, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("zenith.walkeeper_connect_timeout",
							"How long a connection attempt to a walkeeper may take.",
							NULL,
							&zenith_walkeeper_connect_timeout,
							10000, 100, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("zenith.max_replication_write_lag",
							"Backends that write WAL wait while the pageserver has ingested this much less WAL than the compute flushed (0: never).",
							NULL,
							&zenith_max_replication_write_lag,
							0, 0, INT_MAX / 2,
							PGC_SIGHUP,
							GUC_UNIT_MB,
							NULL, NULL, NULL);
	pagestore_define_gucs();
	MarkGUCPrefixReserved("zenith");

	/*
	 * A compute with a pageserver keeps its permanent relations there: the
	 * storage manager is chosen once, at postmaster start.
	 */
	if (process_shared_preload_libraries_in_progress && IsPostmasterEnvironment &&
		zenith_pageserver_connstring != NULL && zenith_pageserver_connstring[0] != '\0')
		pagestore_smgr_init();

	/* Not in postgres --sync-walkeepers, which runs the protocol itself. */
	if (process_shared_preload_libraries_in_progress && IsPostmasterEnvironment &&
		zenith_walkeepers != NULL && zenith_walkeepers[0] != '\0')
	{
		WalProposerRegister();
		wp_backpressure_init();
	}
}

/*
 * pg_cluster_size() -> int8: the sum of the sizes the pageserver reports
 * for every database (pg_database_size() of each, without the permission
 * checks: the function is for the owner of the compute).
 */
Datum
pg_cluster_size(PG_FUNCTION_ARGS)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	int64		total = 0;

	if (dbsize_hook == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("this server does not keep its relations on a pageserver"),
				 errhint("Set zenith.pageserver_connstring and load zenith through shared_preload_libraries.")));
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		CHECK_FOR_INTERRUPTS();
		total += (*dbsize_hook) (db->oid);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	PG_RETURN_INT64(total);
}
