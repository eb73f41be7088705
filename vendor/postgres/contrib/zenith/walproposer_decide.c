/*-------------------------------------------------------------------------
 *
 * walproposer_decide.c
 *	  The walproposer's decisions, as pure functions (see
 *	  walproposer_decide.h); walproposer.c holds the connections and the
 *	  state and calls these.
 *
 * Each function is the counterpart of one in walkeeper/src/proposer.rs, and
 * walkeeper/tests/proposer_conformance.rs checks that both agree on the
 * scenarios of walkeeper/tests/proposer_scenarios.txt. The rules:
 * docs/walkeeper_protocol.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "walproposer_decide.h"

int
wp_quorum(int n)
{
	return n / 2 + 1;
}

/*
 * The term of the last history entry starting at or below the flush LSN: a
 * term elected at the walkeeper's WAL end counts although it wrote nothing
 * (walkeeper/src/proto.rs epoch_at).
 */
term_t
wp_epoch(const VoteResponse *v)
{
	term_t		t = 0;

	for (uint32 k = 0; k < v->history.n; k++)
		if (v->history.entries[k].lsn <= v->flush_lsn)
			t = v->history.entries[k].term;
	return t;
}

WpVote
wp_classify_vote(const VoteResponse *v, term_t prop_term)
{
	if (v->term > prop_term)
		return WP_VOTE_HIGHER_TERM;
	if (v->term < prop_term)
		return WP_VOTE_LOWER_TERM;
	if (!v->vote_given)
		return WP_VOTE_REFUSED;
	return WP_VOTE_GIVEN;
}

int
wp_choose_donor(const VoteResponse *const *votes, int n)
{
	int			donor = -1;

	for (int i = 0; i < n; i++)
	{
		const VoteResponse *v = votes[i];
		term_t		e;
		term_t		de;

		if (v == NULL)
			continue;
		if (donor < 0)
		{
			donor = i;
			continue;
		}
		e = wp_epoch(v);
		de = wp_epoch(votes[donor]);
		if (e > de || (e == de && v->flush_lsn >= votes[donor]->flush_lsn))
			donor = i;
	}
	return donor;
}

bool
wp_elect(const VoteResponse *const *votes, int n, XLogRecPtr bootstrap_lsn,
		 WpElection *out)
{
	const VoteResponse *d;

	out->donor = wp_choose_donor(votes, n);
	if (out->donor < 0)
		return false;
	d = votes[out->donor];

	/* WAL below the highest truncate LSN reported is on every walkeeper. */
	out->truncate_lsn = InvalidXLogRecPtr;
	out->timeline_start = InvalidXLogRecPtr;
	for (int i = 0; i < n; i++)
	{
		const VoteResponse *v = votes[i];

		if (v == NULL)
			continue;
		out->truncate_lsn = Max(out->truncate_lsn, v->truncate_lsn);
		if (v->timeline_start_lsn != InvalidXLogRecPtr &&
			(out->timeline_start == InvalidXLogRecPtr ||
			 v->timeline_start_lsn < out->timeline_start))
			out->timeline_start = v->timeline_start_lsn;
	}

	out->donor_entries = 0;
	if (d->flush_lsn == InvalidXLogRecPtr)
		out->epoch_start = bootstrap_lsn;
	else
	{
		out->epoch_start = d->flush_lsn;
		for (uint32 k = 0; k < d->history.n; k++)
			if (d->history.entries[k].lsn < out->epoch_start)
				out->donor_entries++;
	}
	if (out->timeline_start == InvalidXLogRecPtr)
		out->timeline_start = bootstrap_lsn;
	return true;
}

void
wp_elected_history(const VoteResponse *donor, const WpElection *e, term_t term,
				   TermSwitch *out)
{
	uint32		n = 0;

	if (donor->flush_lsn != InvalidXLogRecPtr)
		for (uint32 k = 0; k < donor->history.n; k++)
			if (donor->history.entries[k].lsn < e->epoch_start)
				out[n++] = donor->history.entries[k];
	Assert(n == e->donor_entries);
	out[n].term = term;
	out[n].lsn = e->epoch_start;
}

/*
 * After the last entry both histories share, and not past the walkeeper's
 * WAL end nor into a term it does not share.
 */
XLogRecPtr
wp_start_streaming_at(const TermHistory *ours, const TermHistory *theirs,
					  XLogRecPtr flush_lsn, XLogRecPtr truncate_lsn)
{
	uint32		common = 0;

	if (ours->n == 0)
		return InvalidXLogRecPtr;
	while (common < ours->n && common < theirs->n &&
		   ours->entries[common].term == theirs->entries[common].term &&
		   ours->entries[common].lsn == theirs->entries[common].lsn)
		common++;
	if (common == 0 || flush_lsn == InvalidXLogRecPtr)
	{
		/*
		 * Nothing shared: all of our WAL (what every walkeeper has, below
		 * the truncate LSN, is not resent).
		 */
		XLogRecPtr	first = ours->entries[0].lsn;
		XLogRecPtr	last = ours->entries[ours->n - 1].lsn;

		return Max(first, Min(truncate_lsn, last));
	}
	if (common == ours->n)
		return flush_lsn;		/* it already follows our term */
	return Min(flush_lsn, ours->entries[common].lsn);
}

/*
 * The quorum-th highest of the flush LSNs, each below epoch_start counted
 * as nothing: WAL of older terms is committed only through our term's.
 */
XLogRecPtr
wp_commit_lsn(const XLogRecPtr *flushes, int n, int quorum,
			  XLogRecPtr epoch_start)
{
	XLogRecPtr	c = InvalidXLogRecPtr;

	if (quorum <= 0 || n < quorum)
		return InvalidXLogRecPtr;
	/* The highest f that at least quorum of the (counted) flushes reach. */
	for (int i = 0; i < n; i++)
	{
		XLogRecPtr	f = flushes[i] >= epoch_start ? flushes[i] : InvalidXLogRecPtr;
		int			reach = 0;

		for (int j = 0; j < n; j++)
		{
			XLogRecPtr	g = flushes[j] >= epoch_start ? flushes[j] : InvalidXLogRecPtr;

			if (g >= f)
				reach++;
		}
		if (reach >= quorum && f > c)
			c = f;
	}
	return c;
}
