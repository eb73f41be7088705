/*-------------------------------------------------------------------------
 *
 * walproposer_decide.h
 *	  The walproposer's decisions, as pure functions: which vote responses
 *	  count, the donor of an election, the elected term history and epoch
 *	  start, where each walkeeper starts streaming, the commit LSN.
 *
 * walkeeper/src/proposer.rs makes the same decisions, and that is the code
 * the model checker (walkeeper/src/model.rs) proves. The conformance test
 * walkeeper/tests/proposer_conformance.rs runs the scenarios of
 * walkeeper/tests/proposer_scenarios.txt through both: this file and
 * walproposer_decide.c are compiled there without PostgreSQL
 * (walkeeper/tests/c_harness), so they use nothing but the types of c.h and
 * access/xlogdefs.h, allocate nothing and touch no global state.
 *
 *-------------------------------------------------------------------------
 */
#ifndef WALPROPOSER_DECIDE_H
#define WALPROPOSER_DECIDE_H

#include "access/xlogdefs.h"

#define WK_MAX_WALKEEPERS 32

typedef uint64 term_t;

typedef struct TermSwitch
{
	term_t		term;
	XLogRecPtr	lsn;
} TermSwitch;

typedef struct TermHistory
{
	uint32		n;
	TermSwitch *entries;
} TermHistory;

typedef struct VoteResponse
{
	term_t		term;
	bool		vote_given;
	XLogRecPtr	flush_lsn;
	XLogRecPtr	truncate_lsn;
	TermHistory history;
	XLogRecPtr	timeline_start_lsn;
} VoteResponse;

/* What a vote response means to a proposer in its term. */
typedef enum WpVote
{
	WP_VOTE_GIVEN,				/* a vote for us: counts towards the quorum */
	WP_VOTE_REFUSED,			/* our term, but no vote (given before, or to
								 * another proposer of the same term) */
	WP_VOTE_HIGHER_TERM,		/* it has moved on to a higher term */
	WP_VOTE_LOWER_TERM			/* not an answer to our request: a walkeeper
								 * answers with max(its term, ours) */
} WpVote;

/* What an election decided. */
typedef struct WpElection
{
	int			donor;			/* index of the donor among the votes */
	XLogRecPtr	epoch_start;	/* where our term's WAL starts */
	uint32		donor_entries;	/* entries of the donor's history below
								 * epoch_start */
	XLogRecPtr	truncate_lsn;
	XLogRecPtr	timeline_start;
} WpElection;

/* The majority of n walkeepers. */
extern int	wp_quorum(int n);

/* The term of the last WAL the voter holds: its epoch (0: none). */
extern term_t wp_epoch(const VoteResponse *v);

extern WpVote wp_classify_vote(const VoteResponse *v, term_t prop_term);

/*
 * The index of the voter with the most advanced log, the highest (epoch,
 * flush LSN), the last of equals (as Iterator::max_by_key in proposer.rs);
 * -1 for none. NULL entries of votes are not votes.
 */
extern int	wp_choose_donor(const VoteResponse *const *votes, int n);

/*
 * Decide an election won with the votes (NULL entries: not votes for us).
 * bootstrap_lsn is where our WAL starts if no voter has any, and the
 * timeline start if no voter knows it. False if there is no vote at all.
 */
extern bool wp_elect(const VoteResponse *const *votes, int n,
					 XLogRecPtr bootstrap_lsn, WpElection *out);

/*
 * The elected term history: the donor's entries below the epoch start, then
 * (term, epoch start). out has room for e->donor_entries + 1 entries.
 */
extern void wp_elected_history(const VoteResponse *donor, const WpElection *e,
							   term_t term, TermSwitch *out);

/*
 * Where a walkeeper whose WAL ends at flush_lsn with history theirs starts
 * receiving our WAL (history ours, our term last).
 */
extern XLogRecPtr wp_start_streaming_at(const TermHistory *ours,
										const TermHistory *theirs,
										XLogRecPtr flush_lsn,
										XLogRecPtr truncate_lsn);

/*
 * The commit LSN given the walkeepers' flush LSNs in our term: the highest
 * LSN that quorum of them have, counting one below epoch_start as having
 * nothing.
 */
extern XLogRecPtr wp_commit_lsn(const XLogRecPtr *flushes, int n, int quorum,
								XLogRecPtr epoch_start);

#endif							/* WALPROPOSER_DECIDE_H */
