/*
 * The walproposer's decisions (vendor/postgres/contrib/zenith/
 * walproposer_decide.c, the code computes run) over the scenarios of
 * walkeeper/tests/proposer_scenarios.txt (its header describes the format).
 *
 *   harness FILE       print what the C functions decide, per scenario:
 *                      "scenario NAME", one result per line, "end"
 *   harness -c FILE    compare that with the file's "expect" lines; exit 1
 *                      on a mismatch
 *
 * walkeeper/tests/proposer_conformance.rs builds this with cc, compares its
 * output with the expectations and with walkeeper::proposer. By hand:
 *
 *   cc -Wall -I walkeeper/tests/c_harness/include \
 *      -I vendor/postgres/contrib/zenith -o /tmp/harness \
 *      walkeeper/tests/c_harness/harness.c \
 *      vendor/postgres/contrib/zenith/walproposer_decide.c
 *   /tmp/harness -c walkeeper/tests/proposer_scenarios.txt
 */
#define _POSIX_C_SOURCE 200809L	/* strdup, strtok_r */

#include "postgres.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "walproposer_decide.h"

#define MAX_VOTES WK_MAX_WALKEEPERS
#define MAX_HISTORY 64
#define MAX_COMMITS 16
#define MAX_LINES 128
#define LINE_LEN 4096

typedef struct Vote
{
	VoteResponse r;
	TermSwitch	entries[MAX_HISTORY];
	bool		late;
} Vote;

typedef struct Commit
{
	XLogRecPtr	epoch_start;
	XLogRecPtr	flushes[MAX_VOTES];
	int			n;
} Commit;

typedef struct Lines
{
	char	   *line[MAX_LINES];
	int			n;
} Lines;

typedef struct Scenario
{
	char		name[256];
	int			lineno;
	int			walkeepers;		/* -1: not given */
	bool		has_term;
	term_t		term;
	XLogRecPtr	bootstrap;
	Vote		votes[MAX_VOTES];
	int			n_votes;
	Commit		commits[MAX_COMMITS];
	int			n_commits;
	Lines		expect;
} Scenario;

static const char *path;
static int	lineno;

static void
die(const char *fmt,...)
{
	va_list		ap;

	fprintf(stderr, "%s:%d: ", path, lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(2);
}

static void
add_line(Lines *l, const char *fmt,...)
{
	char		buf[LINE_LEN];
	va_list		ap;

	if (l->n >= MAX_LINES)
		die("more than %d result lines", MAX_LINES);
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	l->line[l->n++] = strdup(buf);
}

static void
free_lines(Lines *l)
{
	for (int i = 0; i < l->n; i++)
		free(l->line[i]);
	l->n = 0;
}

/* A decimal u64: digits only. */
static uint64
parse_u64(const char *s, const char *what)
{
	char	   *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		die("%s: \"%s\" is not a decimal number", what, s);
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0')
		die("%s: \"%s\" is not a decimal number", what, s);
	return (uint64) v;
}

/* "-" or term@lsn,term@lsn,... */
static void
parse_history(const char *s, Vote *v)
{
	char		buf[LINE_LEN];
	char	   *save;

	v->r.history.n = 0;
	v->r.history.entries = v->entries;
	if (strcmp(s, "-") == 0)
		return;
	snprintf(buf, sizeof(buf), "%s", s);
	for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save))
	{
		char	   *at = strchr(tok, '@');

		if (at == NULL)
			die("history entry \"%s\" is not term@lsn", tok);
		if (v->r.history.n >= MAX_HISTORY)
			die("more than %d history entries", MAX_HISTORY);
		*at = '\0';
		v->entries[v->r.history.n].term = parse_u64(tok, "history term");
		v->entries[v->r.history.n].lsn = parse_u64(at + 1, "history LSN");
		v->r.history.n++;
	}
}

static void
format_history(char *buf, size_t size, const TermSwitch *e, uint32 n)
{
	size_t		len = 0;

	if (n == 0)
	{
		snprintf(buf, size, "-");
		return;
	}
	buf[0] = '\0';
	for (uint32 k = 0; k < n; k++)
		len += snprintf(buf + len, size - len, "%s%" PRIu64 "@%" PRIu64,
						k == 0 ? "" : ",", e[k].term, e[k].lsn);
}

static void
parse_vote(char *rest, Scenario *s)
{
	Vote	   *v;
	char	   *save;
	bool		has_term = false,
				has_given = false,
				has_flush = false;

	if (s->n_votes >= MAX_VOTES)
		die("more than %d votes", MAX_VOTES);
	v = &s->votes[s->n_votes++];
	memset(v, 0, sizeof(*v));
	v->r.history.entries = v->entries;
	for (char *tok = strtok_r(rest, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save))
	{
		char	   *eq = strchr(tok, '=');

		if (strcmp(tok, "late") == 0)
		{
			v->late = true;
			continue;
		}
		if (eq == NULL)
			die("vote field \"%s\" is not key=value or late", tok);
		*eq = '\0';
		if (strcmp(tok, "term") == 0)
		{
			v->r.term = parse_u64(eq + 1, "term");
			has_term = true;
		}
		else if (strcmp(tok, "given") == 0)
		{
			if (strcmp(eq + 1, "0") != 0 && strcmp(eq + 1, "1") != 0)
				die("given=%s: 0 or 1", eq + 1);
			v->r.vote_given = eq[1] == '1';
			has_given = true;
		}
		else if (strcmp(tok, "flush") == 0)
		{
			v->r.flush_lsn = parse_u64(eq + 1, "flush");
			has_flush = true;
		}
		else if (strcmp(tok, "truncate") == 0)
			v->r.truncate_lsn = parse_u64(eq + 1, "truncate");
		else if (strcmp(tok, "tlstart") == 0)
			v->r.timeline_start_lsn = parse_u64(eq + 1, "tlstart");
		else if (strcmp(tok, "history") == 0)
			parse_history(eq + 1, v);
		else
			die("unknown vote field \"%s\"", tok);
	}
	if (!has_term || !has_given || !has_flush)
		die("a vote needs term=, given= and flush=");
}

static void
parse_commit(char *rest, Scenario *s)
{
	Commit	   *c;
	char	   *save;
	bool		has_epoch = false,
				has_flushes = false;

	if (s->n_commits >= MAX_COMMITS)
		die("more than %d commit checks", MAX_COMMITS);
	c = &s->commits[s->n_commits++];
	memset(c, 0, sizeof(*c));
	for (char *tok = strtok_r(rest, " \t", &save); tok != NULL; tok = strtok_r(NULL, " \t", &save))
	{
		char	   *eq = strchr(tok, '=');

		if (eq == NULL)
			die("commit field \"%s\" is not key=value", tok);
		*eq = '\0';
		if (strcmp(tok, "epoch_start") == 0)
		{
			c->epoch_start = parse_u64(eq + 1, "epoch_start");
			has_epoch = true;
		}
		else if (strcmp(tok, "flushes") == 0)
		{
			char	   *save2;

			has_flushes = true;
			if (strcmp(eq + 1, "-") == 0)
				continue;
			for (char *f = strtok_r(eq + 1, ",", &save2); f != NULL; f = strtok_r(NULL, ",", &save2))
			{
				if (c->n >= MAX_VOTES)
					die("more than %d flush LSNs", MAX_VOTES);
				c->flushes[c->n++] = parse_u64(f, "flush LSN");
			}
		}
		else
			die("unknown commit field \"%s\"", tok);
	}
	if (!has_epoch || !has_flushes)
		die("a commit check needs epoch_start= and flushes=");
}

static const char *
trim(char *s)
{
	char	   *end;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/* Whitespace runs become one space. */
static char *
normalize(const char *s)
{
	char	   *out = malloc(strlen(s) + 1);
	size_t		n = 0;
	bool		space = false;

	for (; *s; s++)
	{
		if (*s == ' ' || *s == '\t')
		{
			space = n > 0;
			continue;
		}
		if (space)
			out[n++] = ' ';
		space = false;
		out[n++] = *s;
	}
	out[n] = '\0';
	return out;
}

/* What the C functions decide for the scenario. */
static void
run(const Scenario *s, Lines *out)
{
	int			quorum = wp_quorum(s->walkeepers);

	add_line(out, "quorum %d", quorum);
	if (s->has_term)
	{
		const VoteResponse *votes[MAX_VOTES];
		int			counted = 0;
		WpElection	e;
		TermSwitch	hist[MAX_HISTORY + 1];
		TermHistory ours;
		char		buf[LINE_LEN];

		for (int i = 0; i < s->n_votes; i++)
		{
			const Vote *v = &s->votes[i];

			votes[i] = NULL;
			if (!v->late && wp_classify_vote(&v->r, s->term) == WP_VOTE_GIVEN)
			{
				votes[i] = &v->r;
				counted++;
			}
		}
		add_line(out, "votes %d", counted);
		if (counted < quorum)
			add_line(out, "elected no");
		else
		{
			if (!wp_elect(votes, s->n_votes, s->bootstrap, &e))
				die("scenario %s: wp_elect found no vote", s->name);
			wp_elected_history(votes[e.donor], &e, s->term, hist);
			ours.n = e.donor_entries + 1;
			ours.entries = hist;
			format_history(buf, sizeof(buf), hist, ours.n);
			add_line(out, "elected yes");
			add_line(out, "donor %d", e.donor);
			add_line(out, "epoch_start %" PRIu64, e.epoch_start);
			add_line(out, "history %s", buf);
			add_line(out, "truncate %" PRIu64, e.truncate_lsn);
			add_line(out, "timeline_start %" PRIu64, e.timeline_start);
			/*
			 * ProposerElected goes to the voters, and to every walkeeper of
			 * our term that answered after the election, vote or not.
			 */
			for (int i = 0; i < s->n_votes; i++)
			{
				const VoteResponse *v = &s->votes[i].r;
				WpVote		kind = wp_classify_vote(v, s->term);

				if (s->votes[i].late ? kind != WP_VOTE_GIVEN && kind != WP_VOTE_REFUSED
					: votes[i] == NULL)
					continue;
				add_line(out, "start %d %" PRIu64, i,
						 wp_start_streaming_at(&ours, &v->history, v->flush_lsn, e.truncate_lsn));
			}
		}
	}
	for (int k = 0; k < s->n_commits; k++)
		add_line(out, "commit %d %" PRIu64, k,
				 wp_commit_lsn(s->commits[k].flushes, s->commits[k].n, quorum,
							   s->commits[k].epoch_start));
}

static int	mismatches = 0;
static int	scenarios = 0;

static void
finish(Scenario *s, bool check)
{
	Lines		out = {{0}, 0};

	if (s->walkeepers < 0)
	{
		lineno = s->lineno;
		die("scenario %s has no walkeepers line", s->name);
	}
	run(s, &out);
	scenarios++;
	if (!check)
	{
		printf("scenario %s\n", s->name);
		for (int i = 0; i < out.n; i++)
			printf("%s\n", out.line[i]);
		printf("end\n");
	}
	else
	{
		bool		ok = out.n == s->expect.n;

		for (int i = 0; ok && i < out.n; i++)
			ok = strcmp(out.line[i], s->expect.line[i]) == 0;
		if (ok)
			printf("ok %s\n", s->name);
		else
		{
			mismatches++;
			printf("MISMATCH %s (line %d)\n", s->name, s->lineno);
			for (int i = 0; i < Max(out.n, s->expect.n); i++)
			{
				const char *want = i < s->expect.n ? s->expect.line[i] : "(nothing)";
				const char *got = i < out.n ? out.line[i] : "(nothing)";

				printf("  %s %-40s  C: %s\n", strcmp(want, got) == 0 ? " " : "!", want, got);
			}
		}
	}
	free_lines(&out);
	free_lines(&s->expect);
}

int
main(int argc, char **argv)
{
	bool		check = false;
	FILE	   *f;
	char		line[LINE_LEN];
	static Scenario s;
	bool		in_scenario = false;

	if (argc == 3 && strcmp(argv[1], "-c") == 0)
	{
		check = true;
		path = argv[2];
	}
	else if (argc == 2)
		path = argv[1];
	else
	{
		fprintf(stderr, "usage: %s [-c] SCENARIO_FILE\n", argv[0]);
		return 2;
	}
	f = fopen(path, "r");
	if (f == NULL)
	{
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return 2;
	}
	while (fgets(line, sizeof(line), f) != NULL)
	{
		char	   *hash;
		char	   *rest;
		const char *t;
		char	   *kw;

		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f))
			die("line longer than %d bytes", LINE_LEN - 2);
		if ((hash = strchr(line, '#')) != NULL)
			*hash = '\0';
		t = trim(line);
		if (*t == '\0')
			continue;
		kw = (char *) t;
		rest = kw + strcspn(kw, " \t");
		if (*rest != '\0')
			*rest++ = '\0';
		rest = (char *) trim(rest);

		if (strcmp(kw, "scenario") == 0)
		{
			if (in_scenario)
				die("scenario %s has no end", s.name);
			if (*rest == '\0' || strcspn(rest, " \t") != strlen(rest))
				die("scenario needs one name");
			memset(&s, 0, sizeof(s));
			snprintf(s.name, sizeof(s.name), "%s", rest);
			s.lineno = lineno;
			s.walkeepers = -1;
			in_scenario = true;
			continue;
		}
		if (!in_scenario)
			die("\"%s\" outside a scenario", kw);
		if (strcmp(kw, "end") == 0)
		{
			finish(&s, check);
			in_scenario = false;
		}
		else if (strcmp(kw, "walkeepers") == 0)
			s.walkeepers = (int) parse_u64(rest, "walkeepers");
		else if (strcmp(kw, "term") == 0)
		{
			s.term = parse_u64(rest, "term");
			s.has_term = true;
		}
		else if (strcmp(kw, "bootstrap") == 0)
			s.bootstrap = parse_u64(rest, "bootstrap");
		else if (strcmp(kw, "vote") == 0)
			parse_vote(rest, &s);
		else if (strcmp(kw, "commit") == 0)
			parse_commit(rest, &s);
		else if (strcmp(kw, "expect") == 0)
		{
			if (s.expect.n >= MAX_LINES)
				die("more than %d expect lines", MAX_LINES);
			s.expect.line[s.expect.n++] = normalize(rest);
		}
		else
			die("unknown keyword \"%s\"", kw);
	}
	if (in_scenario)
		die("scenario %s has no end", s.name);
	fclose(f);
	if (check)
		printf("%d scenarios, %d mismatches\n", scenarios, mismatches);
	return mismatches > 0 ? 1 : 0;
}
