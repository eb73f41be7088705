/*-------------------------------------------------------------------------
 *
 * walproposer.h
 *	  The walproposer: makes the compute's WAL durable on a quorum of
 *	  walkeepers (docs/walkeeper_protocol.md in the Zenith repository).
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALPROPOSER_H
#define WALPROPOSER_H

#include "access/xlogdefs.h"
#include "lib/stringinfo.h"

/* term_t, TermSwitch, TermHistory, VoteResponse, WK_MAX_WALKEEPERS */
#include "walproposer_decide.h"

/* GUCs (zenith.c) */
extern char *zenith_walkeepers;
extern char *zenith_tenant_id;
extern char *zenith_timeline_id;
extern int	zenith_walkeeper_reconnect_timeout;
extern int	zenith_walkeeper_connect_timeout;
extern int	zenith_max_replication_write_lag;

#define WK_PROTOCOL_VERSION 1
#define WK_MAX_SEND_SIZE (16 * 8192)
#define WK_MAX_TERM_HISTORY 100000
/* Walkeeper -> proposer messages, decoded (VoteResponse: walproposer_decide.h). */
typedef struct AcceptorGreeting
{
	term_t		term;
	uint64		node_id;
} AcceptorGreeting;

typedef struct AppendResponse
{
	term_t		term;
	XLogRecPtr	flush_lsn;
	XLogRecPtr	commit_lsn;
	bool		has_feedback;
	XLogRecPtr	ps_writelsn;
	XLogRecPtr	ps_flushlsn;
	XLogRecPtr	ps_applylsn;
} AppendResponse;

/* walproposer_proto.c: the codec (little-endian, u64 tag first) */
extern void wk_write_greeting(StringInfo buf, uint32 pg_version, const uint8 *proposer_id,
							  uint64 system_id, const uint8 *timeline_id,
							  const uint8 *tenant_id, uint32 wal_seg_size);
extern void wk_write_vote_request(StringInfo buf, term_t term, const uint8 *proposer_id);
extern void wk_write_elected(StringInfo buf, term_t term, XLogRecPtr start_streaming_at,
							 const TermHistory *history, XLogRecPtr timeline_start_lsn);
extern void wk_write_append_header(StringInfo buf, term_t term, XLogRecPtr epoch_start_lsn,
								   XLogRecPtr begin_lsn, XLogRecPtr end_lsn,
								   XLogRecPtr commit_lsn, XLogRecPtr truncate_lsn,
								   const uint8 *proposer_id);
extern bool wk_parse_greeting(const char *buf, int len, AcceptorGreeting *out, const char **err);
extern bool wk_parse_vote(const char *buf, int len, VoteResponse *out, const char **err);
extern bool wk_parse_append(const char *buf, int len, AppendResponse *out, const char **err);
extern char wk_tag(const char *buf, int len);
extern bool wk_parse_id(const char *hex, uint8 *out);

/* walproposer_wal.c */
extern void wp_wal_init(XLogRecPtr compute_start, uint32 segment_size);
extern XLogRecPtr wp_whole_records_end(void);
extern bool wp_fetch_wal(const char *host, const char *port, const char *name,
						 XLogRecPtr start, XLogRecPtr end);
extern bool wp_have_recovered(XLogRecPtr lsn);
extern void wp_read_wal(char *buf, XLogRecPtr start, Size count, XLogRecPtr epoch_start);

/* backpressure.c */
extern void wp_backpressure_init(void);
extern void wp_publish_feedback(XLogRecPtr write, XLogRecPtr flush, XLogRecPtr apply);

/* What a walproposer runs with: walproposer_main.c builds it from the GUCs. */
typedef struct WpConfig
{
	bool		sync;			/* postgres --sync-walkeepers, not the bgworker */
	int			n_walkeepers;
	char		host[WK_MAX_WALKEEPERS][256];
	char		port[WK_MAX_WALKEEPERS][32];
	uint8		proposer_id[16];	/* random, new for each run */
	uint8		tenant_id[16];
	uint8		timeline_id[16];
	uint64		system_id;
	uint32		seg_size;
	XLogRecPtr	compute_start;	/* bgworker: where this compute's WAL starts */
} WpConfig;

/* walproposer.c: the election, streaming and commit LSN, until exit */
extern void wp_run(const WpConfig *cfg) pg_attribute_noreturn();

/* walproposer_main.c */
extern void WalProposerRegister(void);
extern PGDLLEXPORT void WalProposerMain(Datum arg) pg_attribute_noreturn();
extern PGDLLEXPORT void WalProposerSync(void) pg_attribute_noreturn();

#endif							/* WALPROPOSER_H */
