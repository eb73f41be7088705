/*-------------------------------------------------------------------------
 *
 * walproposer_wal.c
 *	  The WAL the walproposer sends: the compute's own pg_wal, up to the end
 *	  of the last whole record below the local flush LSN, and WAL below the
 *	  start of the compute's WAL recovered from the most advanced walkeeper
 *	  (for walkeepers that lag behind it).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/rmgr.h"
#include "access/xlog.h"
#include "access/xlog_internal.h"
#include "access/xlogreader.h"
#include "access/xlogrecord.h"
#include "access/xlogutils.h"
#include "catalog/pg_control.h"
#include "libpq-fe.h"

#include "walproposer.h"

static XLogReaderState *wal_reader;
static uint32 seg_size;
/* The start of the next whole record not yet found below the flush LSN. */
static XLogRecPtr record_walk_pos;

/* WAL this process does not have, from a walkeeper: [recovered_start, ...) */
static char *recovered;
static XLogRecPtr recovered_start;

void
wp_wal_init(XLogRecPtr compute_start, uint32 segment_size)
{
	seg_size = segment_size;
	record_walk_pos = compute_start;
	wal_reader = XLogReaderAllocate(segment_size, NULL,
									XL_ROUTINE(.segment_open = wal_segment_open,
											   .segment_close = wal_segment_close),
									NULL);
	if (wal_reader == NULL)
		ereport(FATAL, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
}

bool
wp_have_recovered(XLogRecPtr lsn)
{
	return recovered != NULL && lsn >= recovered_start;
}

/*
 * Read [start, end) of a walkeeper's WAL (START_REPLICATION as
 * walproposer_recovery, up to its flush LSN) into the recovered buffer.
 * Blocking: this happens once per election or late joiner, before anything
 * waits on it.
 */
bool
wp_fetch_wal(const char *host, const char *port, const char *name, XLogRecPtr start, XLogRecPtr end)
{
	char		conninfo[1024];
	PGconn	   *conn;
	PGresult   *res;
	char		cmd[64];
	char	   *buf = palloc(end - start);
	XLogRecPtr	pos = start;

	snprintf(conninfo, sizeof(conninfo),
			 "host=%s port=%s dbname=postgres user=zenith_walproposer application_name=walproposer_recovery connect_timeout=%d options='-c tenant_id=%s -c timeline_id=%s'",
			 host, port, Max(1, zenith_walkeeper_connect_timeout / 1000),
			 zenith_tenant_id, zenith_timeline_id);
	{
		/* with auth on: a walkeeperdata token, from the environment */
		const char *keys[] = {"dbname", "password", NULL};
		const char *values[] = {conninfo, getenv("ZENITH_WALKEEPER_TOKEN"), NULL};

		conn = PQconnectdbParams(keys, values, 1);
	}
	if (PQstatus(conn) != CONNECTION_OK)
	{
		ereport(LOG, (errmsg("walproposer: recovery from %s: %s", name, PQerrorMessage(conn))));
		PQfinish(conn);
		pfree(buf);
		return false;
	}
	snprintf(cmd, sizeof(cmd), "START_REPLICATION PHYSICAL %X/%X", LSN_FORMAT_ARGS(start));
	res = PQexec(conn, cmd);
	if (PQresultStatus(res) != PGRES_COPY_BOTH)
	{
		ereport(LOG, (errmsg("walproposer: recovery from %s: %s", name, PQerrorMessage(conn))));
		PQclear(res);
		PQfinish(conn);
		pfree(buf);
		return false;
	}
	PQclear(res);
	while (pos < end)
	{
		char	   *data;
		int			len = PQgetCopyData(conn, &data, 0);

		if (len < 0)
			break;
		if (len > 25 && data[0] == 'w')
		{
			XLogRecPtr	wal_start = 0;
			int			n = len - 25;

			for (int k = 0; k < 8; k++)
				wal_start = (wal_start << 8) | (unsigned char) data[1 + k];
			if (wal_start != pos)
			{
				PQfreemem(data);
				break;
			}
			n = Min((uint64) n, end - pos);
			memcpy(buf + (pos - start), data + 25, n);
			pos += n;
		}
		PQfreemem(data);
	}
	PQfinish(conn);
	if (pos < end)
	{
		ereport(LOG,
				(errmsg("walproposer: recovery from %s stopped at %X/%X, needed up to %X/%X",
						name, LSN_FORMAT_ARGS(pos), LSN_FORMAT_ARGS(end))));
		pfree(buf);
		return false;
	}
	if (recovered)
		pfree(recovered);
	recovered = buf;
	recovered_start = start;
	ereport(LOG,
			(errmsg("walproposer: recovered WAL %X/%X..%X/%X from %s",
					LSN_FORMAT_ARGS(start), LSN_FORMAT_ARGS(end), name)));
	return true;
}

static void
read_local_wal(char *buf, XLogRecPtr start, Size count)
{
	WALReadError errinfo;

	if (!WALRead(wal_reader, buf, start, count, 1, &errinfo))
		WALReadRaiseError(&errinfo);
}

/*
 * Record headers are read through a buffer of WALK_BUF bytes of flushed
 * WAL: a pread per header would cost a system call per WAL record.
 */
#define WALK_BUF (64 * 1024)
static char walk_buf[WALK_BUF];
static XLogRecPtr walk_buf_start;
static Size walk_buf_len;

static void
read_walk(char *dst, XLogRecPtr pos, Size n, XLogRecPtr flush)
{
	if (pos < walk_buf_start || pos + n > walk_buf_start + walk_buf_len)
	{
		/* Refill from pos, up to the flush LSN and the end of its segment. */
		Size		len = Min(WALK_BUF, flush - pos);

		len = Min(len, seg_size - XLogSegmentOffset(pos, seg_size));
		Assert(len >= n);
		read_local_wal(walk_buf, pos, len);
		walk_buf_start = pos;
		walk_buf_len = len;
	}
	memcpy(dst, walk_buf + (pos - walk_buf_start), n);
}

/*
 * Advance record_walk_pos over whole records below the local flush LSN;
 * returns how far WAL may be sent (the end of the last whole record).
 */
XLogRecPtr
wp_whole_records_end(void)
{
	XLogRecPtr	flush = GetFlushRecPtr(NULL);

	for (;;)
	{
		XLogRecPtr	pos = record_walk_pos;
		char		hdr[SizeOfXLogRecord];
		XLogRecord *rec = (XLogRecord *) hdr;
		uint32		left;
		int			got = 0;

		/* A record never starts inside a page header. */
		if (XLogSegmentOffset(pos, seg_size) == 0)
			pos += SizeOfXLogLongPHD;
		else if (pos % XLOG_BLCKSZ == 0)
			pos += SizeOfXLogShortPHD;
		/* The header, which may be split across pages. */
		while (got < (int) SizeOfXLogRecord)
		{
			uint32		n = Min(SizeOfXLogRecord - got, XLOG_BLCKSZ - pos % XLOG_BLCKSZ);

			if (pos + n > flush)
				return record_walk_pos;
			read_walk(hdr + got, pos, n, flush);
			got += n;
			pos += n;
			if (got < (int) SizeOfXLogRecord)
				pos += XLogSegmentOffset(pos, seg_size) == 0 ? SizeOfXLogLongPHD : SizeOfXLogShortPHD;
		}
		if (rec->xl_tot_len < SizeOfXLogRecord)
			return record_walk_pos;		/* not written yet */
		/* The rest of the record, skipping page headers. */
		left = rec->xl_tot_len - SizeOfXLogRecord;
		while (left > 0)
		{
			uint32		n;

			if (pos % XLOG_BLCKSZ == 0)
				pos += XLogSegmentOffset(pos, seg_size) == 0 ? SizeOfXLogLongPHD : SizeOfXLogShortPHD;
			n = Min(left, XLOG_BLCKSZ - pos % XLOG_BLCKSZ);
			pos += n;
			left -= n;
		}
		pos = MAXALIGN64(pos);
		if (rec->xl_rmid == RM_XLOG_ID &&
			(rec->xl_info & ~XLR_INFO_MASK) == XLOG_SWITCH)
		{
			/* The rest of the segment is padding. */
			if (XLogSegmentOffset(pos, seg_size) != 0)
				pos += seg_size - XLogSegmentOffset(pos, seg_size);
		}
		if (pos > flush)
			return record_walk_pos;
		record_walk_pos = pos;
	}
}

/*
 * Copy WAL [start, start + count) from wherever we have it: below
 * epoch_start (the start of our term) from the recovered buffer, above it
 * from the compute's pg_wal.
 */
void
wp_read_wal(char *buf, XLogRecPtr start, Size count, XLogRecPtr epoch_start)
{
	if (start < epoch_start)
	{
		Assert(recovered != NULL && start >= recovered_start && start + count <= epoch_start);
		memcpy(buf, recovered + (start - recovered_start), count);
	}
	else
		read_local_wal(buf, start, count);
}

