/*-------------------------------------------------------------------------
 *
 * walproposer.c
 *	  Make the compute's WAL durable on a quorum of walkeepers.
 *
 * The walproposer connects to every walkeeper in zenith.walkeepers
 * (libpq, non-blocking, one event loop), runs an election (greeting, vote
 * with a term above any seen, the most advanced log wins), tells each
 * walkeeper where its WAL agrees with ours (ProposerElected), and streams
 * WAL to it in AppendRequests. The commit LSN is the highest LSN a majority
 * has fsynced, counting only walkeepers that reached the start of our term.
 * The protocol and its rules: docs/walkeeper_protocol.md.
 *
 * It runs in a compute's background worker and in postgres
 * --sync-walkeepers; walproposer_main.c starts both (wp_run) and says how
 * they differ.
 *
 * WAL below the start of this compute's WAL (a lagging walkeeper's catch
 * up) is read from the donor, the most advanced walkeeper, over
 * START_REPLICATION with application_name walproposer_recovery (the
 * walkeeper then streams up to its flush LSN, not only committed WAL).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "access/xlogutils.h"
#include "access/rmgr.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "replication/syncrep.h"
#include "replication/walsender.h"
#include "replication/walsender_private.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "walproposer.h"

typedef enum
{
	WK_OFFLINE,					/* not connected; retried after a delay */
	WK_CONNECTING,				/* PQconnectPoll in progress */
	WK_WAIT_COPY,				/* START_WAL_PUSH sent */
	WK_HANDSHAKE,				/* greeting sent */
	WK_GREETED,					/* greeting answered, term not chosen yet */
	WK_VOTING,					/* vote request sent */
	WK_VOTED,					/* vote answered, not elected yet */
	WK_ACTIVE					/* elected: streaming */
} WkState;

typedef struct Walkeeper
{
	char		host[256];
	char		port[32];
	PGconn	   *conn;
	WkState		state;
	TimestampTz state_since;
	PostgresPollingStatusType poll;
	bool		want_write;		/* libpq has output pending */
	term_t		greeting_term;
	VoteResponse vote;
	XLogRecPtr	sent;			/* next byte to send */
	XLogRecPtr	flush;			/* its flush LSN in our term */
	XLogRecPtr	commit;			/* the commit LSN it reported */
	XLogRecPtr	commit_sent;	/* the commit LSN last sent to it */
	TimestampTz last_send;
} Walkeeper;

static Walkeeper wks[WK_MAX_WALKEEPERS];
static int	n_wks;
static int	quorum;
static bool sync_mode;

static uint8 proposer_id[16];
static uint8 tenant_id[16];
static uint8 timeline_id[16];
static uint64 system_id;
static uint32 seg_size;

static term_t prop_term;		/* 0: not chosen yet */
static bool elected;
static XLogRecPtr epoch_start;	/* where our term's WAL starts */
static TermHistory prop_history;
static XLogRecPtr truncate_lsn;
static XLogRecPtr timeline_start;
static XLogRecPtr commit_lsn;

/* bgworker: where this compute's WAL starts */
static XLogRecPtr compute_start;

#define MAX_IN_FLIGHT (4 * 1024 * 1024)
#define HEARTBEAT_MS 1000
/*
 * A new commit LSN rides on the next AppendRequest; one with no WAL is sent
 * for it only after this long without any (the walkeepers need it to serve
 * the pageserver, not to acknowledge anything).
 */
#define COMMIT_NOTIFY_MS 20

static void wk_connect(int i);
static void wk_shutdown(int i, const char *why);
static void send_elected(int i);
static void send_wal(int i);
static void event_loop(void) pg_attribute_noreturn();

static const char *
wk_name(int i)
{
	static char buf[300];

	snprintf(buf, sizeof(buf), "%s:%s", wks[i].host, wks[i].port);
	return buf;
}

/* ------------------------------------------------------------ connections */

static void
set_state(int i, WkState s)
{
	wks[i].state = s;
	wks[i].state_since = GetCurrentTimestamp();
}

static void
wk_connect(int i)
{
	Walkeeper  *wk = &wks[i];
	char		options[200];
	char		timeout[32];
	const char *keys[] = {"host", "port", "dbname", "user", "application_name",
	"options", "connect_timeout", "password", NULL};
	const char *values[9];

	snprintf(options, sizeof(options), "-c tenant_id=%s -c timeline_id=%s",
			 zenith_tenant_id, zenith_timeline_id);
	snprintf(timeout, sizeof(timeout), "%d", Max(1, zenith_walkeeper_connect_timeout / 1000));
	values[0] = wk->host;
	values[1] = wk->port;
	values[2] = "postgres";
	values[3] = "zenith_walproposer";
	values[4] = "walproposer";
	values[5] = options;
	values[6] = timeout;
	/* with auth on: a walkeeperdata token, from the environment (NULL: none) */
	values[7] = getenv("ZENITH_WALKEEPER_TOKEN");
	values[8] = NULL;
	wk->conn = PQconnectStartParams(keys, values, 0);
	if (wk->conn == NULL || PQstatus(wk->conn) == CONNECTION_BAD)
	{
		wk_shutdown(i, wk->conn ? PQerrorMessage(wk->conn) : "out of memory");
		return;
	}
	wk->poll = PGRES_POLLING_WRITING;
	wk->want_write = false;
	set_state(i, WK_CONNECTING);
}

static void
wk_shutdown(int i, const char *why)
{
	Walkeeper  *wk = &wks[i];

	if (wk->state != WK_OFFLINE || wk->conn != NULL)
		ereport(LOG,
				(errmsg("walproposer: walkeeper %s: %s", wk_name(i), why ? why : "connection closed")));
	if (wk->conn)
		PQfinish(wk->conn);
	wk->conn = NULL;
	wk->want_write = false;
	set_state(i, WK_OFFLINE);
}

/* Queue one message and push what libpq can send now. */
static bool
wk_send(int i, StringInfo msg)
{
	Walkeeper  *wk = &wks[i];
	int			r;

	if (PQputCopyData(wk->conn, msg->data, msg->len) != 1)
	{
		wk_shutdown(i, PQerrorMessage(wk->conn));
		return false;
	}
	r = PQflush(wk->conn);
	if (r < 0)
	{
		wk_shutdown(i, PQerrorMessage(wk->conn));
		return false;
	}
	wk->want_write = r == 1;
	wk->last_send = GetCurrentTimestamp();
	return true;
}

static void
send_greeting(int i)
{
	StringInfoData msg;

	initStringInfo(&msg);
	wk_write_greeting(&msg, PG_VERSION_NUM, proposer_id, system_id, timeline_id,
					  tenant_id, seg_size);
	if (wk_send(i, &msg))
		set_state(i, WK_HANDSHAKE);
	pfree(msg.data);
}

static void
send_vote_request(int i)
{
	StringInfoData msg;

	initStringInfo(&msg);
	wk_write_vote_request(&msg, prop_term, proposer_id);
	if (wk_send(i, &msg))
		set_state(i, WK_VOTING);
	pfree(msg.data);
}

/* ------------------------------------------------------------ deposed */

static void
deposed(int i, term_t their_term)
{
	if (sync_mode)
		ereport(FATAL,
				(errmsg("walproposer: walkeeper %s has term " UINT64_FORMAT ", above ours (" UINT64_FORMAT "): another compute is writing this timeline",
						wk_name(i), their_term, prop_term)));
	ereport(LOG,
			(errmsg("walproposer: deposed: walkeeper %s has term " UINT64_FORMAT ", above ours (" UINT64_FORMAT "); another compute has taken over this timeline, shutting down",
					wk_name(i), their_term, prop_term)));
	/*
	 * Exiting shuts the compute down (shutdown_compute_on_exit: a fast
	 * shutdown): waiting commits fail, nothing more is acknowledged.
	 */
	proc_exit(1);
}

/* ------------------------------------------------------------ election */

/* Where walkeeper i starts receiving our WAL. */
static XLogRecPtr
start_streaming_at(const VoteResponse *v)
{
	return wp_start_streaming_at(&prop_history, &v->history, v->flush_lsn, truncate_lsn);
}

/* Read [start, end) of walkeeper i's WAL into the recovered buffer. */
static bool
fetch_wal(int donor, XLogRecPtr start, XLogRecPtr end)
{
	return wp_fetch_wal(wks[donor].host, wks[donor].port, wk_name(donor), start, end);
}

/* Make sure WAL from lsn up to epoch_start is at hand; false if not now. */
static bool
have_wal_from(XLogRecPtr lsn, int prefer)
{
	if (lsn >= epoch_start)
		return true;
	if (wp_have_recovered(lsn))
		return true;
	/* The preferred donor first, then any walkeeper that has our epoch. */
	if (prefer >= 0 && fetch_wal(prefer, lsn, epoch_start))
		return true;
	for (int i = 0; i < n_wks; i++)
		if (i != prefer && wks[i].state == WK_ACTIVE && wks[i].flush >= epoch_start &&
			fetch_wal(i, lsn, epoch_start))
			return true;
	return false;
}

static void
run_election(void)
{
	const VoteResponse *votes[WK_MAX_WALKEEPERS];
	WpElection	e;
	int			donor;
	XLogRecPtr	min_start = InvalidXLogRecPtr;

	/* Every vote for us so far: the quorum just reached. */
	for (int i = 0; i < n_wks; i++)
		votes[i] = wks[i].state == WK_VOTED &&
			wp_classify_vote(&wks[i].vote, prop_term) == WP_VOTE_GIVEN ? &wks[i].vote : NULL;
	if (!wp_elect(votes, n_wks, compute_start, &e))
		elog(FATAL, "walproposer: an election without votes");
	donor = e.donor;
	truncate_lsn = e.truncate_lsn;
	timeline_start = e.timeline_start;
	epoch_start = e.epoch_start;

	if (wks[donor].vote.flush_lsn == InvalidXLogRecPtr)
	{
		if (sync_mode)
		{
			/* Nothing anywhere: the timeline starts with the next compute. */
			printf("0/0\n");
			fflush(stdout);
			proc_exit(0);
		}
	}
	else if (!sync_mode && epoch_start != compute_start)
	{
		ereport(LOG,
				(errmsg("walproposer: the walkeepers' WAL ends at %X/%X, but this compute's WAL starts at %X/%X; "
						"start the compute from a basebackup taken at the LSN postgres --sync-walkeepers prints",
						LSN_FORMAT_ARGS(epoch_start), LSN_FORMAT_ARGS(compute_start))));
		proc_exit(1);			/* and the compute shuts down with it */
	}
	prop_history.n = e.donor_entries + 1;
	prop_history.entries = MemoryContextAlloc(TopMemoryContext, sizeof(TermSwitch) * prop_history.n);
	wp_elected_history(&wks[donor].vote, &e, prop_term, prop_history.entries);
	elected = true;

	for (int i = 0; i < n_wks; i++)
	{
		XLogRecPtr	s;

		if (wks[i].state != WK_VOTED)
			continue;
		s = start_streaming_at(&wks[i].vote);
		if (min_start == InvalidXLogRecPtr || s < min_start)
			min_start = s;
	}
	ereport(LOG,
			(errmsg("walproposer: elected in term " UINT64_FORMAT " with donor %s; our WAL starts at %X/%X, truncate LSN %X/%X",
					prop_term, wk_name(donor), LSN_FORMAT_ARGS(epoch_start),
					LSN_FORMAT_ARGS(truncate_lsn))));
	if (min_start != InvalidXLogRecPtr && min_start < epoch_start)
		(void) have_wal_from(min_start, donor);

	for (int i = 0; i < n_wks; i++)
		if (wks[i].state == WK_VOTED)
			send_elected(i);
}

static void
send_elected(int i)
{
	Walkeeper  *wk = &wks[i];
	XLogRecPtr	start = start_streaming_at(&wk->vote);
	StringInfoData msg;

	if (!have_wal_from(start, -1))
	{
		wk_shutdown(i, "its missing WAL could not be read from any walkeeper; retrying later");
		return;
	}
	initStringInfo(&msg);
	wk_write_elected(&msg, prop_term, start, &prop_history, timeline_start);
	if (!wk_send(i, &msg))
	{
		pfree(msg.data);
		return;
	}
	pfree(msg.data);
	wk->sent = start;
	wk->flush = start;
	/* Force an AppendRequest now: its reply tells us its flush LSN. */
	wk->commit_sent = PG_UINT64_MAX;
	set_state(i, WK_ACTIVE);
	ereport(LOG,
			(errmsg("walproposer: streaming to walkeeper %s from %X/%X",
					wk_name(i), LSN_FORMAT_ARGS(start))));
	send_wal(i);
}

/* ------------------------------------------------------------ WAL */

static void
send_append(int i, XLogRecPtr end)
{
	Walkeeper  *wk = &wks[i];
	StringInfoData msg;
	Size		n = end - wk->sent;

	initStringInfo(&msg);
	wk_write_append_header(&msg, prop_term, epoch_start, wk->sent, end, commit_lsn,
						   truncate_lsn, proposer_id);
	if (n > 0)
	{
		enlargeStringInfo(&msg, n);
		wp_read_wal(msg.data + msg.len, wk->sent, n, epoch_start);
		msg.len += n;
		msg.data[msg.len] = '\0';
	}
	if (wk_send(i, &msg))
	{
		wk->sent = end;
		wk->commit_sent = commit_lsn;
	}
	pfree(msg.data);
}

static XLogRecPtr available_end = InvalidXLogRecPtr;

static void
send_wal(int i)
{
	Walkeeper  *wk = &wks[i];
	XLogRecPtr	avail = sync_mode ? epoch_start : available_end;

	while (wk->state == WK_ACTIVE && wk->sent < avail && wk->sent - wk->flush < MAX_IN_FLIGHT)
	{
		XLogRecPtr	end = Min(avail, wk->sent + WK_MAX_SEND_SIZE);

		/* Recovered WAL and local WAL are sent in separate messages. */
		if (wk->sent < epoch_start)
			end = Min(end, epoch_start);
		send_append(i, end);
	}
	if (wk->state == WK_ACTIVE)
	{
		TimestampTz now = GetCurrentTimestamp();

		if (wk->commit_sent == PG_UINT64_MAX ||
			(wk->commit_sent != commit_lsn &&
			 (sync_mode || TimestampDifferenceExceeds(wk->last_send, now, COMMIT_NOTIFY_MS))) ||
			TimestampDifferenceExceeds(wk->last_send, now, HEARTBEAT_MS))
			send_append(i, wk->sent);
	}
}

/* ------------------------------------------------------------ commit */

static void
update_commit(void)
{
	XLogRecPtr	flushes[WK_MAX_WALKEEPERS];
	XLogRecPtr	min_flush = PG_UINT64_MAX;
	XLogRecPtr	c;

	for (int i = 0; i < n_wks; i++)
	{
		flushes[i] = wks[i].flush;
		min_flush = Min(min_flush, wks[i].flush);
	}
	c = wp_commit_lsn(flushes, n_wks, quorum, epoch_start);
	if (min_flush > truncate_lsn)
		truncate_lsn = min_flush;
	if (c <= commit_lsn)
		return;
	commit_lsn = c;
	if (!sync_mode)
	{
		SpinLockAcquire(&MyWalSnd->mutex);
		MyWalSnd->write = commit_lsn;
		MyWalSnd->flush = commit_lsn;
		MyWalSnd->apply = commit_lsn;
		SpinLockRelease(&MyWalSnd->mutex);
		SyncRepReleaseWaiters();
	}
}

/* ------------------------------------------------------------ messages */

static void
handle_message(int i, const char *buf, int len)
{
	Walkeeper  *wk = &wks[i];
	const char *err = NULL;

	switch (wk->state)
	{
		case WK_HANDSHAKE:
			{
				AcceptorGreeting g;
				int			greeted = 0;
				term_t		max_term = 0;

				if (!wk_parse_greeting(buf, len, &g, &err))
					break;
				wk->greeting_term = g.term;
				set_state(i, WK_GREETED);
				if (prop_term != 0)
				{
					if (g.term > prop_term && elected)
						deposed(i, g.term);
					send_vote_request(i);
					return;
				}
				for (int k = 0; k < n_wks; k++)
					if (wks[k].state == WK_GREETED)
					{
						greeted++;
						max_term = Max(max_term, wks[k].greeting_term);
					}
				if (greeted >= quorum)
				{
					prop_term = max_term + 1;
					ereport(LOG,
							(errmsg("walproposer: %d walkeepers greeted; proposing term " UINT64_FORMAT,
									greeted, prop_term)));
					for (int k = 0; k < n_wks; k++)
						if (wks[k].state == WK_GREETED)
							send_vote_request(k);
				}
				return;
			}
		case WK_VOTING:
			{
				VoteResponse v;
				WpVote		kind;
				int			votes = 0;

				if (!wk_parse_vote(buf, len, &v, &err))
					break;
				kind = wp_classify_vote(&v, prop_term);
				if (kind == WP_VOTE_HIGHER_TERM)
				{
					if (elected || sync_mode)
						deposed(i, v.term);
					wk_shutdown(i, "it has voted in a higher term");
					return;
				}
				if (kind == WP_VOTE_LOWER_TERM)
				{
					err = "a vote response of a lower term than the request's";
					break;
				}
				if (kind == WP_VOTE_REFUSED && !elected)
				{
					/*
					 * It voted for another proposer in our term: two computes
					 * started at once. Neither can be sure to win; give way.
					 */
					deposed(i, v.term);
				}
				if (wk->vote.history.entries)
					pfree(wk->vote.history.entries);
				wk->vote = v;	/* its history is in TopMemoryContext */
				set_state(i, WK_VOTED);
				if (elected)
				{
					send_elected(i);
					return;
				}
				for (int k = 0; k < n_wks; k++)
					if (wks[k].state == WK_VOTED &&
						wp_classify_vote(&wks[k].vote, prop_term) == WP_VOTE_GIVEN)
						votes++;
				if (votes >= quorum)
					run_election();
				return;
			}
		case WK_ACTIVE:
			{
				AppendResponse r;

				if (!wk_parse_append(buf, len, &r, &err))
					break;
				if (r.term > prop_term)
					deposed(i, r.term);
				if (r.flush_lsn > wk->flush)
					wk->flush = r.flush_lsn;
				wk->commit = r.commit_lsn;
				if (r.has_feedback && !sync_mode)
					wp_publish_feedback(r.ps_writelsn, r.ps_flushlsn, r.ps_applylsn);
				update_commit();
				send_wal(i);
				return;
			}
		default:
			err = "a message in a state that expects none";
			break;
	}
	wk_shutdown(i, psprintf("bad message from the walkeeper: %s", err ? err : "unexpected"));
}

/* Read what walkeeper i sent. */
static void
wk_read(int i)
{
	Walkeeper  *wk = &wks[i];

	if (!PQconsumeInput(wk->conn))
	{
		wk_shutdown(i, PQerrorMessage(wk->conn));
		return;
	}
	if (wk->state == WK_WAIT_COPY)
	{
		PGresult   *res;

		if (PQisBusy(wk->conn))
			return;
		res = PQgetResult(wk->conn);
		if (PQresultStatus(res) != PGRES_COPY_BOTH)
		{
			wk_shutdown(i, psprintf("START_WAL_PUSH failed: %s", PQerrorMessage(wk->conn)));
			PQclear(res);
			return;
		}
		PQclear(res);
		send_greeting(i);
		return;
	}
	while (wk->conn != NULL && wk->state != WK_OFFLINE)
	{
		char	   *buf;
		int			len = PQgetCopyData(wk->conn, &buf, 1);

		if (len == 0)
			return;
		if (len < 0)
		{
			PGresult   *res = PQgetResult(wk->conn);

			wk_shutdown(i, psprintf("the walkeeper ended the stream: %s",
									res ? PQresultErrorMessage(res) : PQerrorMessage(wk->conn)));
			if (res)
				PQclear(res);
			return;
		}
		handle_message(i, buf, len);
		PQfreemem(buf);
	}
}

static void
wk_advance_connect(int i)
{
	Walkeeper  *wk = &wks[i];

	wk->poll = PQconnectPoll(wk->conn);
	if (wk->poll == PGRES_POLLING_FAILED)
	{
		wk_shutdown(i, PQerrorMessage(wk->conn));
		return;
	}
	if (wk->poll != PGRES_POLLING_OK)
		return;
	if (PQsetnonblocking(wk->conn, 1) != 0 || !PQsendQuery(wk->conn, "START_WAL_PUSH"))
	{
		wk_shutdown(i, PQerrorMessage(wk->conn));
		return;
	}
	set_state(i, WK_WAIT_COPY);
	if (PQflush(wk->conn) == 1)
		wk->want_write = true;
}

/* ------------------------------------------------------------ loop */

static bool
sync_done(void)
{
	int			n = 0;

	for (int i = 0; i < n_wks; i++)
		if (wks[i].state == WK_ACTIVE && wks[i].commit >= epoch_start)
			n++;
	return elected && n >= quorum;
}

static void
event_loop(void)
{
	for (;;)
	{
		TimestampTz now = GetCurrentTimestamp();
		WaitEventSet *set;
		WaitEvent	events[WK_MAX_WALKEEPERS + 2];
		int			n;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		for (int i = 0; i < n_wks; i++)
		{
			Walkeeper  *wk = &wks[i];

			if (wk->state == WK_OFFLINE &&
				TimestampDifferenceExceeds(wk->state_since, now, zenith_walkeeper_reconnect_timeout))
				wk_connect(i);
			else if (wk->state >= WK_CONNECTING && wk->state <= WK_HANDSHAKE &&
					 TimestampDifferenceExceeds(wk->state_since, now, zenith_walkeeper_connect_timeout))
				wk_shutdown(i, "timed out connecting");
		}
		if (elected)
		{
			if (!sync_mode)
				available_end = wp_whole_records_end();
			for (int i = 0; i < n_wks; i++)
				if (wks[i].state == WK_ACTIVE)
					send_wal(i);
		}
		if (sync_mode && sync_done())
		{
			printf("%X/%X\n", LSN_FORMAT_ARGS(epoch_start));
			fflush(stdout);
			ereport(LOG,
					(errmsg("walproposer: walkeepers synced at %X/%X in term " UINT64_FORMAT,
							LSN_FORMAT_ARGS(epoch_start), prop_term)));
			proc_exit(0);
		}

		set = CreateWaitEventSet(CurrentMemoryContext, n_wks + 2);
		AddWaitEventToSet(set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		if (!sync_mode)
			AddWaitEventToSet(set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		for (int i = 0; i < n_wks; i++)
		{
			Walkeeper  *wk = &wks[i];
			uint32		ev;

			if (wk->state == WK_OFFLINE || wk->conn == NULL)
				continue;
			if (wk->state == WK_CONNECTING)
				ev = wk->poll == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE;
			else
				ev = WL_SOCKET_READABLE | (wk->want_write ? WL_SOCKET_WRITEABLE : 0);
			AddWaitEventToSet(set, ev, PQsocket(wk->conn), NULL, (void *) (intptr_t) (i + 1));
		}
		n = WaitEventSetWait(set, COMMIT_NOTIFY_MS, events, n_wks + 2, PG_WAIT_EXTENSION);
		FreeWaitEventSet(set);
		for (int e = 0; e < n; e++)
		{
			int			i = (int) (intptr_t) events[e].user_data - 1;

			if (events[e].events & WL_LATCH_SET)
			{
				ResetLatch(MyLatch);
				continue;
			}
			if (i < 0 || wks[i].conn == NULL || wks[i].state == WK_OFFLINE)
				continue;
			if (wks[i].state == WK_CONNECTING)
			{
				wk_advance_connect(i);
				continue;
			}
			if (events[e].events & WL_SOCKET_WRITEABLE)
			{
				int			r = PQflush(wks[i].conn);

				if (r < 0)
				{
					wk_shutdown(i, PQerrorMessage(wks[i].conn));
					continue;
				}
				wks[i].want_write = r == 1;
			}
			if (events[e].events & WL_SOCKET_READABLE)
				wk_read(i);
		}
	}
}

/* ------------------------------------------------------------ running */

void
wp_run(const WpConfig *cfg)
{
	sync_mode = cfg->sync;
	n_wks = cfg->n_walkeepers;
	for (int i = 0; i < n_wks; i++)
	{
		memset(&wks[i], 0, sizeof(Walkeeper));
		strlcpy(wks[i].host, cfg->host[i], sizeof(wks[i].host));
		strlcpy(wks[i].port, cfg->port[i], sizeof(wks[i].port));
		wks[i].state = WK_OFFLINE;
	}
	quorum = wp_quorum(n_wks);
	memcpy(proposer_id, cfg->proposer_id, sizeof(proposer_id));
	memcpy(tenant_id, cfg->tenant_id, sizeof(tenant_id));
	memcpy(timeline_id, cfg->timeline_id, sizeof(timeline_id));
	system_id = cfg->system_id;
	seg_size = cfg->seg_size;
	compute_start = cfg->compute_start;
	if (!sync_mode)
		wp_wal_init(compute_start, seg_size);
	event_loop();
}
