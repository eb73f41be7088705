/*-------------------------------------------------------------------------
 *
 * walproposer_proto.c
 *	  The walproposer <-> walkeeper message codec.
 *
 * Every message is the payload of one CopyData; integers are little-endian
 * whatever the host, and each message starts with a u64 tag holding one
 * ASCII character. Layouts: docs/walkeeper_protocol.md. The parsers check
 * every length against the input and never read past it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "walproposer.h"

static void
put_u32(StringInfo buf, uint32 v)
{
	unsigned char b[4];

	for (int i = 0; i < 4; i++)
		b[i] = (v >> (8 * i)) & 0xff;
	appendBinaryStringInfo(buf, (char *) b, 4);
}

static void
put_u64(StringInfo buf, uint64 v)
{
	unsigned char b[8];

	for (int i = 0; i < 8; i++)
		b[i] = (v >> (8 * i)) & 0xff;
	appendBinaryStringInfo(buf, (char *) b, 8);
}

static void
put_history(StringInfo buf, const TermHistory *h)
{
	put_u32(buf, h->n);
	for (uint32 i = 0; i < h->n; i++)
	{
		put_u64(buf, h->entries[i].term);
		put_u64(buf, h->entries[i].lsn);
	}
}

void
wk_write_greeting(StringInfo buf, uint32 pg_version, const uint8 *proposer_id,
				  uint64 system_id, const uint8 *timeline_id,
				  const uint8 *tenant_id, uint32 wal_seg_size)
{
	put_u64(buf, 'g');
	put_u32(buf, WK_PROTOCOL_VERSION);
	put_u32(buf, pg_version);
	appendBinaryStringInfo(buf, (const char *) proposer_id, 16);
	put_u64(buf, system_id);
	appendBinaryStringInfo(buf, (const char *) timeline_id, 16);
	appendBinaryStringInfo(buf, (const char *) tenant_id, 16);
	put_u32(buf, 1);			/* PostgreSQL timeline */
	put_u32(buf, wal_seg_size);
}

void
wk_write_vote_request(StringInfo buf, term_t term, const uint8 *proposer_id)
{
	put_u64(buf, 'v');
	put_u64(buf, term);
	appendBinaryStringInfo(buf, (const char *) proposer_id, 16);
}

void
wk_write_elected(StringInfo buf, term_t term, XLogRecPtr start_streaming_at,
				 const TermHistory *history, XLogRecPtr timeline_start_lsn)
{
	put_u64(buf, 'e');
	put_u64(buf, term);
	put_u64(buf, start_streaming_at);
	put_history(buf, history);
	put_u64(buf, timeline_start_lsn);
}

void
wk_write_append_header(StringInfo buf, term_t term, XLogRecPtr epoch_start_lsn,
					   XLogRecPtr begin_lsn, XLogRecPtr end_lsn,
					   XLogRecPtr commit_lsn, XLogRecPtr truncate_lsn,
					   const uint8 *proposer_id)
{
	put_u64(buf, 'a');
	put_u64(buf, term);
	put_u64(buf, epoch_start_lsn);
	put_u64(buf, begin_lsn);
	put_u64(buf, end_lsn);
	put_u64(buf, commit_lsn);
	put_u64(buf, truncate_lsn);
	appendBinaryStringInfo(buf, (const char *) proposer_id, 16);
}

/* A bounded little-endian reader. */
typedef struct Reader
{
	const unsigned char *p;
	int			left;
	const char *err;
} Reader;

static bool
get_u64(Reader *r, uint64 *v)
{
	if (r->left < 8)
	{
		r->err = "message truncated";
		return false;
	}
	*v = 0;
	for (int i = 0; i < 8; i++)
		*v |= ((uint64) r->p[i]) << (8 * i);
	r->p += 8;
	r->left -= 8;
	return true;
}

static bool
get_u32(Reader *r, uint32 *v)
{
	if (r->left < 4)
	{
		r->err = "message truncated";
		return false;
	}
	*v = 0;
	for (int i = 0; i < 4; i++)
		*v |= ((uint32) r->p[i]) << (8 * i);
	r->p += 4;
	r->left -= 4;
	return true;
}

static bool
get_be64(Reader *r, uint64 *v)
{
	if (r->left < 8)
	{
		r->err = "feedback truncated";
		return false;
	}
	*v = 0;
	for (int i = 0; i < 8; i++)
		*v = (*v << 8) | r->p[i];
	r->p += 8;
	r->left -= 8;
	return true;
}

static bool
start(Reader *r, const char *buf, int len, char tag)
{
	uint64		t;

	r->p = (const unsigned char *) buf;
	r->left = len;
	r->err = NULL;
	if (!get_u64(r, &t))
		return false;
	if (t != (uint64) tag)
	{
		r->err = "unexpected message tag";
		return false;
	}
	return true;
}

static bool
finish(Reader *r)
{
	if (r->err == NULL && r->left != 0)
		r->err = "trailing bytes after the message";
	return r->err == NULL;
}

char
wk_tag(const char *buf, int len)
{
	if (len < 8 || buf[0] == 0)
		return '\0';
	for (int i = 1; i < 8; i++)
		if (buf[i] != 0)
			return '\0';
	return buf[0];
}

bool
wk_parse_greeting(const char *buf, int len, AcceptorGreeting *out, const char **err)
{
	Reader		r;
	bool		ok;

	ok = start(&r, buf, len, 'g') && get_u64(&r, &out->term) &&
		get_u64(&r, &out->node_id) && finish(&r);
	*err = r.err;
	return ok;
}

bool
wk_parse_vote(const char *buf, int len, VoteResponse *out, const char **err)
{
	Reader		r;
	uint64		given;
	uint32		n;

	memset(out, 0, sizeof(*out));
	if (!start(&r, buf, len, 'v') || !get_u64(&r, &out->term) || !get_u64(&r, &given) ||
		!get_u64(&r, &out->flush_lsn) || !get_u64(&r, &out->truncate_lsn) ||
		!get_u32(&r, &n))
	{
		*err = r.err;
		return false;
	}
	if (given > 1 || n > WK_MAX_TERM_HISTORY || (int64) n * 16 > r.left)
	{
		*err = "invalid vote response";
		return false;
	}
	out->vote_given = given == 1;
	out->history.n = n;
	out->history.entries = palloc(sizeof(TermSwitch) * Max(n, 1));
	for (uint32 i = 0; i < n; i++)
	{
		if (!get_u64(&r, &out->history.entries[i].term) ||
			!get_u64(&r, &out->history.entries[i].lsn))
			break;
	}
	if (r.err == NULL)
		get_u64(&r, &out->timeline_start_lsn);
	finish(&r);
	*err = r.err;
	return r.err == NULL;
}

bool
wk_parse_append(const char *buf, int len, AppendResponse *out, const char **err)
{
	Reader		r;
	uint64		ignore;

	memset(out, 0, sizeof(*out));
	if (!start(&r, buf, len, 'a') || !get_u64(&r, &out->term) ||
		!get_u64(&r, &out->flush_lsn) || !get_u64(&r, &out->commit_lsn) ||
		!get_u64(&r, &ignore) || !get_u64(&r, &ignore) || !get_u64(&r, &ignore))
	{
		*err = r.err;
		return false;
	}
	if (r.left > 0)
	{
		/* Pageserver feedback: u8 nkeys, then key\0, i32 BE len, value. */
		int			nkeys = r.p[0];

		r.p++;
		r.left--;
		out->has_feedback = true;
		for (int k = 0; k < nkeys && r.err == NULL; k++)
		{
			const char *key = (const char *) r.p;
			int			klen = strnlen(key, r.left);
			int32		vlen;
			uint64		v = 0;

			if (klen >= r.left || r.left - klen - 1 < 4)
			{
				r.err = "feedback truncated";
				break;
			}
			r.p += klen + 1;
			r.left -= klen + 1;
			vlen = (int32) (((uint32) r.p[0] << 24) | ((uint32) r.p[1] << 16) |
							((uint32) r.p[2] << 8) | r.p[3]);
			r.p += 4;
			r.left -= 4;
			if (vlen < 0 || vlen > r.left)
			{
				r.err = "feedback value truncated";
				break;
			}
			if (vlen == 8)
			{
				get_be64(&r, &v);
				if (strncmp(key, "ps_writelsn", klen) == 0 && klen == 11)
					out->ps_writelsn = v;
				else if (strncmp(key, "ps_flushlsn", klen) == 0 && klen == 11)
					out->ps_flushlsn = v;
				else if (strncmp(key, "ps_applylsn", klen) == 0 && klen == 11)
					out->ps_applylsn = v;
			}
			else
			{
				r.p += vlen;
				r.left -= vlen;
			}
		}
	}
	finish(&r);
	*err = r.err;
	return r.err == NULL;
}

bool
wk_parse_id(const char *hex, uint8 *out)
{
	if (hex == NULL || strlen(hex) != 32)
		return false;
	for (int i = 0; i < 16; i++)
	{
		int			v = 0;

		for (int j = 0; j < 2; j++)
		{
			char		c = hex[2 * i + j];

			v <<= 4;
			if (c >= '0' && c <= '9')
				v |= c - '0';
			else if (c >= 'a' && c <= 'f')
				v |= c - 'a' + 10;
			else if (c >= 'A' && c <= 'F')
				v |= c - 'A' + 10;
			else
				return false;
		}
		out[i] = (uint8) v;
	}
	return true;
}
