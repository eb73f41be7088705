/*-------------------------------------------------------------------------
 *
 * pagestore_conn.c
 *	  One backend's libpq connection to the pageserver's page stream.
 *
 * Opened on first use (zenith.pageserver_connstring, with the token of
 * $ZENITH_PAGESERVER_TOKEN as the password) by "pagestream <tenant>
 * <timeline>"; then each request and each response is one CopyData
 * message. Every wait serves interrupts. What is sent and what a response
 * means is pagestore_client.c's: a failure here is reported with its
 * reason, and the client decides whether to reconnect and retry.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "libpq-fe.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#include "pagestore.h"
#include "walproposer.h"

static PGconn *ps_conn = NULL;

/*
 * The wait set of the current connection (latch, postmaster death, the
 * socket readable), made once per connection rather than per wait.
 */
static WaitEventSet *ps_wait_set = NULL;

/* Close the connection (if open); the next send opens a new one. */
void
ps_conn_close(void)
{
	if (ps_wait_set != NULL)
		FreeWaitEventSet(ps_wait_set);
	ps_wait_set = NULL;
	if (ps_conn != NULL)
		PQfinish(ps_conn);
	ps_conn = NULL;
}

bool
ps_conn_is_open(void)
{
	return ps_conn != NULL;
}

/*
 * Wait until the connection's socket is ready for events, serving
 * interrupts; false after timeout ms (-1: no limit).
 */
static bool
ps_wait(int events, long timeout)
{
	int			rc;

	rc = WaitLatchOrSocket(MyLatch, WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | events |
						   (timeout >= 0 ? WL_TIMEOUT : 0),
						   PQsocket(ps_conn), timeout, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
	return (rc & WL_TIMEOUT) == 0;
}

/* Wait until a response can be read, serving interrupts. */
static void
ps_wait_response(void)
{
	WaitEvent	event;

	if (ps_wait_set == NULL)
	{
		ps_wait_set = CreateWaitEventSet(TopMemoryContext, 3);
		AddWaitEventToSet(ps_wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
		AddWaitEventToSet(ps_wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
		AddWaitEventToSet(ps_wait_set, WL_SOCKET_READABLE, PQsocket(ps_conn), NULL, NULL);
	}
	(void) WaitEventSetWait(ps_wait_set, -1L, &event, 1, PG_WAIT_EXTENSION);
	ResetLatch(MyLatch);
	CHECK_FOR_INTERRUPTS();
}

/*
 * Open the connection and start the pagestream. false, with the reason in
 * *err, when the pageserver cannot be reached.
 */
static bool
ps_connect(char **err)
{
	PostgresPollingStatusType st;
	PGresult   *res;
	char	   *query;
	bool		ok;

	if (zenith_pageserver_connstring == NULL || zenith_pageserver_connstring[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("zenith.pageserver_connstring is not set")));
	if (zenith_tenant_id == NULL || zenith_tenant_id[0] == '\0' ||
		zenith_timeline_id == NULL || zenith_timeline_id[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("zenith.tenant_id and zenith.timeline_id must be set to read pages from the pageserver")));

	/*
	 * With auth on, the pageserver takes a token as the password. It comes
	 * from the environment the postmaster was started with, so that it is
	 * never written to postgresql.conf; a password in the connection string
	 * is overridden by it.
	 */
	{
		const char *keys[] = {"dbname", "password", NULL};
		const char *values[] = {zenith_pageserver_connstring,
		getenv("ZENITH_PAGESERVER_TOKEN"), NULL};

		ps_conn = PQconnectStartParams(keys, values, 1);
	}
	if (ps_conn == NULL)
	{
		*err = pstrdup("out of memory");
		return false;
	}
	st = PGRES_POLLING_WRITING;
	while (st != PGRES_POLLING_OK)
	{
		if (PQstatus(ps_conn) == CONNECTION_BAD || st == PGRES_POLLING_FAILED)
		{
			*err = pchomp(PQerrorMessage(ps_conn));
			return false;
		}
		if (!ps_wait(st == PGRES_POLLING_READING ? WL_SOCKET_READABLE : WL_SOCKET_WRITEABLE,
					 Max(zenith_pageserver_retry_timeout, 100)))
		{
			*err = pstrdup("timed out connecting");
			return false;
		}
		st = PQconnectPoll(ps_conn);
	}

	query = psprintf("pagestream %s %s", zenith_tenant_id, zenith_timeline_id);
	ok = PQsendQuery(ps_conn, query);
	pfree(query);
	if (!ok)
	{
		*err = pchomp(PQerrorMessage(ps_conn));
		return false;
	}
	for (;;)
	{
		if (!PQconsumeInput(ps_conn))
		{
			*err = pchomp(PQerrorMessage(ps_conn));
			return false;
		}
		if (!PQisBusy(ps_conn))
			break;
		if (!ps_wait(WL_SOCKET_READABLE, Max(zenith_pageserver_retry_timeout, 100)))
		{
			*err = pstrdup("timed out starting the page stream");
			return false;
		}
	}
	res = PQgetResult(ps_conn);
	if (PQresultStatus(res) != PGRES_COPY_BOTH)
	{
		/*
		 * Refused (a tenant still loading, or one this pageserver does not
		 * have): retried like a failed connection, then reported.
		 */
		*err = psprintf("the pageserver refused the page stream of timeline %s: %s",
						zenith_timeline_id,
						PQresultErrorMessage(res)[0] ? pchomp(PQresultErrorMessage(res))
						: "no CopyBothResponse");
		PQclear(res);
		return false;
	}
	PQclear(res);
	return true;
}

/*
 * Send one request (opening the connection first if there is none); false,
 * with the reason in *err, if the connection failed.
 */
bool
ps_conn_send(StringInfo req, char **err)
{
	if (ps_conn == NULL && !ps_connect(err))
		return false;
	if (PQputCopyData(ps_conn, req->data, req->len) != 1 || PQflush(ps_conn) != 0)
	{
		*err = pchomp(PQerrorMessage(ps_conn));
		return false;
	}
	return true;
}

/* The next response on the connection into resp; false on failure. */
bool
ps_conn_receive(StringInfo resp, char **err)
{
	char	   *buf;
	int			n;

	bool		read_first = true;

	for (;;)
	{
		n = PQgetCopyData(ps_conn, &buf, 1);
		if (n > 0)
			break;
		if (n == 0)
		{
			/*
			 * Read what has arrived before waiting: with requests read ahead,
			 * the response is usually there already.  The pageserver may
			 * wait for WAL (wait_lsn_timeout) before it answers.
			 */
			if (!read_first)
				ps_wait_response();
			read_first = false;
			if (!PQconsumeInput(ps_conn))
			{
				*err = pchomp(PQerrorMessage(ps_conn));
				return false;
			}
			continue;
		}
		if (n == -1)
		{
			PGresult   *res = PQgetResult(ps_conn);

			*err = res != NULL && PQresultErrorMessage(res)[0]
				? psprintf("the pageserver ended the page stream: %s",
						   pchomp(PQresultErrorMessage(res)))
				: pstrdup("the pageserver ended the page stream");
			PQclear(res);
		}
		else
			*err = pchomp(PQerrorMessage(ps_conn));
		return false;
	}
	appendBinaryStringInfo(resp, buf, n);
	PQfreemem(buf);
	return true;
}
