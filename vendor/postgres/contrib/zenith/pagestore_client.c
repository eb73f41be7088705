/*-------------------------------------------------------------------------
 *
 * pagestore_client.c
 *	  The pagestream client: GetPage@LSN and friends, over libpq.
 *
 * Each backend opens one connection to the pageserver on first use
 * (zenith.pageserver_connstring) and sends "pagestream <tenant> <timeline>";
 * from then on every request is one CopyData message and is answered by
 * one, in order (docs/pagestream.md has the byte layouts).
 *
 * Read-ahead: smgrprefetch() sends GetPage requests without waiting
 * (pagestore_prefetch), up to zenith.readahead_buffer_size of them; their
 * responses are kept in a ring in request order until a read takes them
 * (pagestore_read).  A response is used only if it is as new as the read
 * needs (its not_modified_since is not older than the read's); others are
 * dropped.  Any other request first receives every response still due.
 *
 * Requests only read, so one whose connection breaks (the pageserver
 * restarting, say) is sent again on a new connection, with pauses growing
 * from 50 ms to 1 s, for up to zenith.pageserver_retry_timeout; after that
 * the request fails with an ERROR (SQLSTATE 08006) and the backend goes on
 * serving its client. An error response of the pageserver (a relation that
 * does not exist, an LSN it cannot serve) fails the request with an ERROR
 * carrying the pageserver's message (SQLSTATE 58030). While it waits, the
 * backend serves interrupts; a request interrupted half-way leaves the
 * connection out of step, so it is closed and the next request opens a new
 * one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/heapam.h"
#include "libpq-fe.h"
#include "libpq/pqformat.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "pagestore.h"
#include "walproposer.h"

/* Request tags (docs/pagestream.md) */
#define PS_EXISTS		0
#define PS_NBLOCKS		1
#define PS_GET_PAGE		2
#define PS_DB_SIZE		3

/* Response tags */
#define PS_EXISTS_RESPONSE	100
#define PS_NBLOCKS_RESPONSE	101
#define PS_PAGE_RESPONSE	102
#define PS_ERROR_RESPONSE	103
#define PS_DB_SIZE_RESPONSE	104

char	   *zenith_pageserver_connstring = NULL;
int			zenith_pageserver_retry_timeout = 5000; /* ms */

/* A request is under way on the connection: if we are here again, it was cut off. */
static bool ps_busy = false;
static uint64 ps_next_reqid = 1;

/* Read-ahead (see the header comment) */
int			zenith_readahead_buffer_size = 128;

typedef enum
{
	SLOT_FREE,
	SLOT_INFLIGHT,				/* sent, response not received */
	SLOT_RECEIVED				/* response in page or error */
} SlotState;

typedef struct PrefetchSlot
{
	SlotState	state;
	uint64		reqid;
	RelFileNode rnode;
	ForkNumber	forknum;
	BlockNumber blkno;
	XLogRecPtr	request_lsn;
	XLogRecPtr	not_modified_since;
	bool		failed;			/* the response was an error */
	PGAlignedBlock page;
} PrefetchSlot;

static PrefetchSlot *ring = NULL;
static int	ring_size = 0;
/* Slots [ring_head, ring_head + ring_used) are in use, oldest first. */
static int	ring_head = 0;
static int	ring_used = 0;
/* Slots whose response has not been received yet (all at the front). */
static int	ring_inflight = 0;

/* A page request is under way (the backend may hold a buffer's I/O). */
bool
pagestore_request_in_progress(void)
{
	return ps_busy;
}

/*
 * Sequential scans read ahead as far as the ring holds: the block about to
 * be read and the ones after it (a distance of the ring's size would make
 * each new request push out the response about to be used).
 */
static void
readahead_assign(int newval, void *extra)
{
	seqscan_prefetch_blocks = Max(newval - 1, 0);
}

void
pagestore_define_gucs(void)
{
	DefineCustomStringVariable("zenith.pageserver_connstring",
							   "libpq connection string of the pageserver that serves this compute's pages.",
							   NULL,
							   &zenith_pageserver_connstring,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("zenith.readahead_buffer_size",
							"How many pages a backend may request from the pageserver ahead of reading them (0: no read-ahead).",
							NULL,
							&zenith_readahead_buffer_size,
							128, 0, 4096,
							PGC_USERSET,
							0,
							NULL, readahead_assign, NULL);
	DefineCustomIntVariable("zenith.pageserver_retry_timeout",
							"How long a page request keeps reconnecting to an unreachable pageserver before it fails.",
							NULL,
							&zenith_pageserver_retry_timeout,
							5000, 0, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
}

static PrefetchSlot *
slot_at(int i)
{
	return &ring[(ring_head + i) % ring_size];
}

static void
slot_free(PrefetchSlot *slot)
{
	slot->state = SLOT_FREE;
}

/* Forget every read-ahead request (their responses are lost with the connection). */
static void
ring_clear(void)
{
	for (int i = 0; i < ring_used; i++)
		slot_free(slot_at(i));
	ring_head = 0;
	ring_used = 0;
	ring_inflight = 0;
}

/* Close the connection: every request on it, read ahead or not, is lost. */
static void
ps_disconnect(void)
{
	ps_conn_close();
	ps_busy = false;
	ring_clear();
}

static bool
ps_try(StringInfo req, StringInfo resp, char **err)
{
	return ps_conn_send(req, err) && ps_conn_receive(resp, err);
}

/*
 * Receive the response of the oldest read-ahead request still due. false
 * (ring cleared) if the connection failed; an ERROR on a response that is
 * not the one due.
 */
static bool
ring_receive_one(void)
{
	PrefetchSlot *slot = slot_at(ring_used - ring_inflight);
	StringInfoData resp;
	char	   *err = NULL;
	int			tag;
	uint64		reqid;

	Assert(ring_inflight > 0);
	initStringInfo(&resp);
	ps_busy = true;
	if (!ps_conn_receive(&resp, &err))
	{
		elog(LOG, "pageserver connection failed during read-ahead (%s)", err);
		ps_disconnect();
		pfree(resp.data);
		return false;
	}
	ps_busy = false;
	if (resp.len < 9)
	{
		ps_disconnect();
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("response of %d bytes from the pageserver", resp.len)));
	}
	tag = pq_getmsgbyte(&resp);
	reqid = pq_getmsgint64(&resp);
	if (reqid != slot->reqid ||
		(tag == PS_PAGE_RESPONSE && resp.len - resp.cursor != BLCKSZ) ||
		(tag != PS_PAGE_RESPONSE && tag != PS_ERROR_RESPONSE))
	{
		ps_disconnect();
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("unexpected response (tag %d, request %llu, %d bytes) from the pageserver to read-ahead request %llu",
						tag, (unsigned long long) reqid, resp.len,
						(unsigned long long) slot->reqid)));
	}
	/* An error is not kept: the read that wants the page asks again. */
	if (tag == PS_PAGE_RESPONSE)
		memcpy(slot->page.data, resp.data + resp.cursor, BLCKSZ);
	slot->failed = tag != PS_PAGE_RESPONSE;
	slot->state = SLOT_RECEIVED;
	ring_inflight--;
	pfree(resp.data);
	return true;
}

/* Receive every response still due (before a request that is not read-ahead). */
static void
ring_drain(void)
{
	while (ring_inflight > 0)
	{
		if (ps_busy)
		{
			/* A receive was cut off: the connection is out of step. */
			ps_disconnect();
			return;
		}
		if (!ring_receive_one())
			return;
	}
}

/* Free slots at the front make room. */
static void
ring_compact(void)
{
	while (ring_used > ring_inflight && slot_at(0)->state == SLOT_FREE)
	{
		ring_head = (ring_head + 1) % ring_size;
		ring_used--;
	}
}

/* Drop the oldest slot, receiving its response first if it is still due. */
static void
ring_pop(void)
{
	if (ring_inflight == ring_used && !ring_receive_one())
		return;
	slot_free(slot_at(0));
	ring_head = (ring_head + 1) % ring_size;
	ring_used--;
}

/*
 * One request, its response in *resp (cursor past the tag and reqid); the
 * response tag is returned. what: for messages ("read block 7 of ...").
 */
static int
ps_request(StringInfo req, uint64 reqid, StringInfo resp, const char *what)
{
	TimestampTz start = GetCurrentTimestamp();
	long		pause = 50;
	int			tag;
	uint64		got;

	ring_drain();
	for (;;)
	{
		char	   *err = NULL;

		if (ps_busy)
			ps_disconnect();	/* the previous request was interrupted */
		ps_busy = true;
		resetStringInfo(resp);
		if (ps_try(req, resp, &err))
			break;
		ps_disconnect();
		if (TimestampDifferenceExceeds(start, GetCurrentTimestamp(),
									   zenith_pageserver_retry_timeout))
			ereport(ERROR,
					(errcode(ERRCODE_CONNECTION_FAILURE),
					 errmsg("could not %s: the pageserver is unreachable", what),
					 errdetail_internal("%s", err)));
		elog(LOG, "pageserver connection failed (%s), retrying in %ld ms", err, pause);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, pause,
						 PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		pause = Min(pause * 2, 1000);
	}
	ps_busy = false;

	if (resp->len < 9)
	{
		ps_disconnect();
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("could not %s: response of %d bytes from the pageserver", what, resp->len)));
	}
	tag = pq_getmsgbyte(resp);
	got = pq_getmsgint64(resp);
	if (tag == PS_ERROR_RESPONSE)
	{
		/* UTF-8 text, then one NUL that ends the message. */
		const char *msg = resp->data + resp->cursor;
		int			len = resp->len - resp->cursor - 1;

		if (len < 0 || memchr(msg, '\0', len + 1) != msg + len)
		{
			ps_disconnect();
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("could not %s: malformed error response from the pageserver", what)));
		}
		ereport(ERROR,
				(errcode(ERRCODE_IO_ERROR),
				 errmsg("could not %s: %s", what,
						pg_any_to_server(msg, len, PG_UTF8))));
	}
	if (got != reqid)
	{
		ps_disconnect();
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("could not %s: the pageserver answered request %llu, not %llu", what,
						(unsigned long long) got, (unsigned long long) reqid)));
	}
	return tag;
}

/* The 25-byte header every request starts with. */
static uint64
ps_begin(StringInfo req, int tag, XLogRecPtr request_lsn, XLogRecPtr not_modified_since)
{
	uint64		reqid = ps_next_reqid++;

	initStringInfo(req);
	pq_sendbyte(req, tag);
	pq_sendint64(req, reqid);
	pq_sendint64(req, request_lsn);
	pq_sendint64(req, not_modified_since);
	return reqid;
}

static void
ps_send_rel(StringInfo req, RelFileNode rnode, ForkNumber forknum)
{
	pq_sendint32(req, rnode.spcNode);
	pq_sendint32(req, rnode.dbNode);
	pq_sendint32(req, rnode.relNode);
	pq_sendbyte(req, forknum);
}

/* The response must have the expected tag and end where its body does. */
static void
ps_expect(StringInfo resp, int tag, int want, int body, const char *what)
{
	if (tag != want || resp->len - resp->cursor != body)
	{
		ps_disconnect();
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("could not %s: unexpected response (tag %d, %d bytes) from the pageserver",
						what, tag, resp->len)));
	}
}

/* What a request is, for its error messages (no allocation per request). */
#define WHAT_LEN 160

/* "at 0/16B3748", or "at the latest LSN" */
static void
at_lsn(char *buf, XLogRecPtr lsn)
{
	if (lsn == ZENITH_LATEST_LSN)
		strlcpy(buf, "at the latest LSN", 32);
	else
		snprintf(buf, 32, "at %X/%X", LSN_FORMAT_ARGS(lsn));
}

static void
rel_what(char *what, const char *verb, RelFileNode rnode, ForkNumber forknum, XLogRecPtr lsn)
{
	char		at[32];

	at_lsn(at, lsn);
	snprintf(what, WHAT_LEN, "%s of relation %u/%u/%u fork %d %s", verb, rnode.spcNode,
			 rnode.dbNode, rnode.relNode, forknum, at);
}

bool
zenith_rel_exists(RelFileNode rnode, ForkNumber forknum, XLogRecPtr request_lsn,
				  XLogRecPtr not_modified_since)
{
	StringInfoData req;
	StringInfoData resp;
	char		what[WHAT_LEN];
	uint64		reqid = ps_begin(&req, PS_EXISTS, request_lsn, not_modified_since);
	int			tag;
	int			v;

	rel_what(what, "check existence", rnode, forknum, request_lsn);
	ps_send_rel(&req, rnode, forknum);
	initStringInfo(&resp);
	tag = ps_request(&req, reqid, &resp, what);
	ps_expect(&resp, tag, PS_EXISTS_RESPONSE, 1, what);
	v = pq_getmsgbyte(&resp);
	if (v != 0 && v != 1)
	{
		ps_disconnect();
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("could not %s: existence %d from the pageserver", what, v)));
	}
	pfree(req.data);
	pfree(resp.data);
	return v != 0;
}

BlockNumber
zenith_rel_nblocks(RelFileNode rnode, ForkNumber forknum, XLogRecPtr request_lsn,
				   XLogRecPtr not_modified_since)
{
	StringInfoData req;
	StringInfoData resp;
	char		what[WHAT_LEN];
	uint64		reqid = ps_begin(&req, PS_NBLOCKS, request_lsn, not_modified_since);
	int			tag;
	BlockNumber n;

	rel_what(what, "get the size", rnode, forknum, request_lsn);
	ps_send_rel(&req, rnode, forknum);
	initStringInfo(&resp);
	tag = ps_request(&req, reqid, &resp, what);
	ps_expect(&resp, tag, PS_NBLOCKS_RESPONSE, 4, what);
	n = pq_getmsgint(&resp, 4);
	pfree(req.data);
	pfree(resp.data);
	return n;
}

int64
zenith_db_size(Oid dbnode, XLogRecPtr request_lsn, XLogRecPtr not_modified_since)
{
	StringInfoData req;
	StringInfoData resp;
	char		what[WHAT_LEN];
	char		at[32];
	uint64		reqid = ps_begin(&req, PS_DB_SIZE, request_lsn, not_modified_since);
	int			tag;
	int64		size;

	at_lsn(at, request_lsn);
	snprintf(what, WHAT_LEN, "get the size of database %u %s", dbnode, at);
	pq_sendint32(&req, dbnode);
	initStringInfo(&resp);
	tag = ps_request(&req, reqid, &resp, what);
	ps_expect(&resp, tag, PS_DB_SIZE_RESPONSE, 8, what);
	size = (int64) pq_getmsgint64(&resp);
	pfree(req.data);
	pfree(resp.data);
	return size;
}

void
zenith_read_at_lsn(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
				   XLogRecPtr request_lsn, XLogRecPtr not_modified_since, char *buffer)
{
	StringInfoData req;
	StringInfoData resp;
	char		what[WHAT_LEN];
	char		at[32];
	uint64		reqid = ps_begin(&req, PS_GET_PAGE, request_lsn, not_modified_since);
	int			tag;

	at_lsn(at, request_lsn);
	snprintf(what, WHAT_LEN, "read block %u of relation %u/%u/%u fork %d %s", blkno,
			 rnode.spcNode, rnode.dbNode, rnode.relNode, forknum, at);
	ps_send_rel(&req, rnode, forknum);
	pq_sendint32(&req, blkno);
	initStringInfo(&resp);
	tag = ps_request(&req, reqid, &resp, what);
	ps_expect(&resp, tag, PS_PAGE_RESPONSE, BLCKSZ, what);
	memcpy(buffer, pq_getmsgbytes(&resp, BLCKSZ), BLCKSZ);
	pfree(req.data);
	pfree(resp.data);
}

/* The slot of an earlier read-ahead of this page, if any. */
static int
ring_find(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno)
{
	for (int i = 0; i < ring_used; i++)
	{
		PrefetchSlot *slot = slot_at(i);

		if (slot->state != SLOT_FREE && slot->blkno == blkno && slot->forknum == forknum &&
			RelFileNodeEquals(slot->rnode, rnode))
			return i;
	}
	return -1;
}

void
pagestore_prefetch(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
				   XLogRecPtr request_lsn, XLogRecPtr not_modified_since)
{
	PrefetchSlot *slot;
	StringInfoData req;
	char	   *err = NULL;

	if (zenith_readahead_buffer_size == 0)
		return;
	if (ps_busy)
		ps_disconnect();		/* a request was cut off */
	if (ring_size != zenith_readahead_buffer_size)
	{
		/* First use, or the setting changed: a new ring. */
		ring_drain();
		ring_clear();
		if (ring != NULL)
			pfree(ring);
		ring = MemoryContextAllocZero(TopMemoryContext,
									  sizeof(PrefetchSlot) * zenith_readahead_buffer_size);
		ring_size = zenith_readahead_buffer_size;
	}
	if (ring_find(rnode, forknum, blkno) >= 0)
		return;
	ring_compact();
	/* Full: the oldest goes (received, or received now). */
	if (ring_used == ring_size)
		ring_pop();
	if (ring_used == ring_size)
		return;

	slot = slot_at(ring_used);
	slot->reqid = ps_begin(&req, PS_GET_PAGE, request_lsn, not_modified_since);
	ps_send_rel(&req, rnode, forknum);
	pq_sendint32(&req, blkno);
	if (!ps_conn_send(&req, &err))
	{
		/* The read will connect again and say what is wrong. */
		elog(DEBUG1, "read-ahead request not sent: %s", err);
		ps_disconnect();
		pfree(req.data);
		return;
	}
	pfree(req.data);
	slot->state = SLOT_INFLIGHT;
	slot->rnode = rnode;
	slot->forknum = forknum;
	slot->blkno = blkno;
	slot->request_lsn = request_lsn;
	slot->not_modified_since = not_modified_since;
	slot->failed = false;
	ring_used++;
	ring_inflight++;
}

/*
 * A page for the storage manager: from an earlier read-ahead if there is
 * one new enough, else requested now.
 */
void
pagestore_read(RelFileNode rnode, ForkNumber forknum, BlockNumber blkno,
			   XLogRecPtr request_lsn, XLogRecPtr not_modified_since, char *buffer)
{
	int			i = ring_used > 0 && !ps_busy ? ring_find(rnode, forknum, blkno) : -1;

	if (i >= 0)
	{
		PrefetchSlot *slot = slot_at(i);
		bool		usable = slot->request_lsn == request_lsn &&
			slot->not_modified_since >= not_modified_since;

		/* Receive up to it (the connection may fail: the ring is then empty). */
		while (usable && slot->state == SLOT_INFLIGHT && ring_inflight > 0)
		{
			if (!ring_receive_one())
				break;
		}
		if (ps_conn_is_open() && slot->state == SLOT_RECEIVED)
		{
			/* An error response is not reported: the request below says it. */
			if (usable && !slot->failed)
			{
				memcpy(buffer, slot->page.data, BLCKSZ);
				slot_free(slot);
				ring_compact();
				return;
			}
			/* Too old, or failed: dropped (its slot is reused once it reaches the front). */
			slot_free(slot);
			ring_compact();
		}
	}
	zenith_read_at_lsn(rnode, forknum, blkno, request_lsn, not_modified_since, buffer);
}
