/*-------------------------------------------------------------------------
 *
 * walproposer_main.c
 *	  The two ways a walproposer runs, and the configuration it runs with.
 *
 * Both read the GUCs (zenith.walkeepers, zenith.tenant_id,
 * zenith.timeline_id) into a WpConfig and hand it to wp_run()
 * (walproposer.c), which runs the protocol:
 *
 * - The background worker of a running compute (WalProposerMain). It takes
 *   a walsender slot (patch 0008), named "walproposer" for
 *   synchronous_standby_names, and records the commit LSN there as the
 *   standby's write/flush/apply positions: commits return once a majority
 *   of walkeepers has fsynced them. WAL flushes wake it (WalSndWakeup).
 *   It sends WAL up to the end of the last complete record at or below the
 *   local flush LSN, so that the end of the walkeepers' WAL is always a
 *   record boundary where the next compute can start. If a walkeeper
 *   answers with a higher term, another compute has taken the timeline:
 *   the walproposer logs why and shuts the compute down (fast shutdown);
 *   waiting commits fail instead of being acknowledged.
 *
 * - postgres --sync-walkeepers (WalProposerSync), before a compute starts:
 *   the same election, then the WAL of the most advanced walkeeper is
 *   copied to a majority and the commit LSN brought to its end; the LSN is
 *   printed and the process exits 0. "0/0": the walkeepers hold no WAL.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <unistd.h>

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "catalog/pg_control.h"
#include "common/controldata_utils.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "postmaster/postmaster.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/ipc.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/memutils.h"

#include "walproposer.h"

/* ------------------------------------------------------------ configuration */

/* The GUCs as a WpConfig (FATAL on a bad value); system id and segment size are the caller's. */
static void
parse_config(WpConfig *cfg, bool sync)
{
	char	   *list;
	char	   *tok;
	char	   *save;

	memset(cfg, 0, sizeof(WpConfig));
	cfg->sync = sync;
	if (!wk_parse_id(zenith_tenant_id, cfg->tenant_id))
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("zenith.tenant_id \"%s\" is not 32 hex digits", zenith_tenant_id)));
	if (!wk_parse_id(zenith_timeline_id, cfg->timeline_id))
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("zenith.timeline_id \"%s\" is not 32 hex digits", zenith_timeline_id)));
	list = pstrdup(zenith_walkeepers ? zenith_walkeepers : "");
	for (tok = strtok_r(list, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
	{
		int			n = cfg->n_walkeepers;
		char	   *colon;

		while (*tok == ' ')
			tok++;
		if (*tok == '\0')
			continue;
		if (n >= WK_MAX_WALKEEPERS)
			ereport(FATAL,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("zenith.walkeepers lists more than %d walkeepers", WK_MAX_WALKEEPERS)));
		colon = strrchr(tok, ':');
		if (colon == NULL || colon == tok || colon[1] == '\0' ||
			colon - tok >= (int) sizeof(cfg->host[0]) || strlen(colon + 1) >= sizeof(cfg->port[0]))
			ereport(FATAL,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid walkeeper address \"%s\" in zenith.walkeepers: expected host:port", tok)));
		memcpy(cfg->host[n], tok, colon - tok);
		strlcpy(cfg->port[n], colon + 1, sizeof(cfg->port[n]));
		cfg->n_walkeepers++;
	}
	if (cfg->n_walkeepers == 0)
		ereport(FATAL,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("zenith.walkeepers is empty")));
	if (!pg_strong_random(cfg->proposer_id, sizeof(cfg->proposer_id)))
		ereport(FATAL, (errmsg("could not generate a proposer id")));
}

/* ------------------------------------------------------------ entry points */

void
WalProposerRegister(void)
{
	BackgroundWorker bgw;

	memset(&bgw, 0, sizeof(bgw));
	bgw.bgw_flags = BGWORKER_SHMEM_ACCESS;
	bgw.bgw_start_time = BgWorkerStart_RecoveryFinished;
	snprintf(bgw.bgw_library_name, BGW_MAXLEN, "zenith");
	snprintf(bgw.bgw_function_name, BGW_MAXLEN, "WalProposerMain");
	snprintf(bgw.bgw_name, BGW_MAXLEN, "WAL proposer");
	snprintf(bgw.bgw_type, BGW_MAXLEN, "WAL proposer");
	/*
	 * Restarted after a crash of the compute (crash recovery wrote WAL the
	 * walkeepers do not have: the new walproposer finds that out and shuts
	 * the compute down, rather than none running and commits hanging).
	 */
	bgw.bgw_restart_time = 1;
	bgw.bgw_notify_pid = 0;
	RegisterBackgroundWorker(&bgw);
}

/* Where this compute's WAL starts: the page holding the checkpoint it started from. */
static XLogRecPtr
find_compute_start(uint32 seg_size)
{
	XLogRecPtr	redo = GetRedoRecPtr();

	if (XLogSegmentOffset(redo, seg_size) == SizeOfXLogLongPHD)
		return redo - SizeOfXLogLongPHD;
	if (redo % XLOG_BLCKSZ == SizeOfXLogShortPHD)
		return redo - SizeOfXLogShortPHD;
	return redo;
}

/*
 * The walproposer exits only when the compute shuts down (SIGTERM from the
 * postmaster) or on an error. After an error no commit could ever be
 * acknowledged again (it is not restarted: a new election must start from a
 * new basebackup), so it shuts the compute down instead of leaving commits
 * hanging.
 */
static volatile sig_atomic_t got_sigterm = false;

static void
walproposer_sigterm(SIGNAL_ARGS)
{
	got_sigterm = true;
	die(postgres_signal_arg);
}

static void
shutdown_compute_on_exit(int code, Datum arg)
{
	if (!got_sigterm)
	{
		ereport(LOG,
				(errmsg("walproposer: exiting (code %d); shutting the compute down, since no commit could be acknowledged without it",
						code)));
		kill(PostmasterPid, SIGINT);
	}
}

void
WalProposerMain(Datum arg)
{
	WpConfig	cfg;

	MemoryContextSwitchTo(TopMemoryContext);
	on_proc_exit(shutdown_compute_on_exit, 0);
	pqsignal(SIGTERM, walproposer_sigterm);
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	BackgroundWorkerUnblockSignals();

	parse_config(&cfg, false);
	cfg.system_id = GetSystemIdentifier();
	cfg.seg_size = wal_segment_size;

	/* Take part in synchronous replication as "walproposer". */
	SetConfigOption("application_name", "walproposer", PGC_USERSET, PGC_S_OVERRIDE);
	WalSndInitSlotForWalProposer();
	SyncRepInitConfig();
	SpinLockAcquire(&MyWalSnd->mutex);
	MyWalSnd->state = WALSNDSTATE_STREAMING;
	SpinLockRelease(&MyWalSnd->mutex);

	cfg.compute_start = find_compute_start(cfg.seg_size);
	ereport(LOG,
			(errmsg("walproposer: this compute's WAL starts at %X/%X; %d walkeepers, quorum %d",
					LSN_FORMAT_ARGS(cfg.compute_start), cfg.n_walkeepers,
					wp_quorum(cfg.n_walkeepers))));
	wp_run(&cfg);
}

void
WalProposerSync(void)
{
	WpConfig	cfg;
	ControlFileData *cf;
	bool		crc_ok;

	MemoryContextSwitchTo(TopMemoryContext);
	parse_config(&cfg, true);
	/* The system id and segment size come from the walkeepers' greeting
	 * checks; a compute that does not exist yet has neither: use pg_control
	 * when there is one, else 0 (adopted by the walkeepers). */
	cfg.seg_size = DEFAULT_XLOG_SEG_SIZE;
	cfg.system_id = 0;
	if (access(psprintf("%s/%s", DataDir, XLOG_CONTROL_FILE), R_OK) == 0)
	{
		cf = get_controlfile(DataDir, &crc_ok);
		if (crc_ok)
		{
			cfg.system_id = cf->system_identifier;
			cfg.seg_size = cf->xlog_seg_size;
		}
	}
	wp_run(&cfg);
}
