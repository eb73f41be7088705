//! The proposer that runs is the proposer that is checked.
//!
//! Computes run the walproposer in C; the model checker proves
//! `walkeeper::proposer`. Both make the same decisions: which answers are
//! votes, the donor of an election, the epoch start and the elected term
//! history, the truncate and timeline start LSNs, where each walkeeper starts
//! streaming, and the commit LSN. This test runs the scenarios of
//! `tests/proposer_scenarios.txt` (its header has the format) through both
//! and checks each against the expectations written there, naming the
//! scenario on a mismatch.
//!
//! The C side is the extension's own `walproposer_decide.c` (which
//! `walproposer.c` calls), built with `$CC` (default `cc`) together with
//! `tests/c_harness/harness.c` and two stand-in PostgreSQL headers, so no
//! PostgreSQL tree is needed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use walkeeper::proposer::{choose_donor, commit_lsn, elect, quorum, start_streaming_at};
use walkeeper::proto::{Term, TermHistory, TermSwitch, VoteResponse};
use zenith_utils::lsn::Lsn;

struct Vote {
    response: VoteResponse,
    /// Answered after the election: not part of it.
    late: bool,
}

struct Commit {
    epoch_start: Lsn,
    flushes: Vec<Lsn>,
}

struct Scenario {
    name: String,
    line: usize,
    walkeepers: Option<usize>,
    term: Option<Term>,
    bootstrap: Lsn,
    votes: Vec<Vote>,
    commits: Vec<Commit>,
    expect: Vec<String>,
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scenario_file() -> PathBuf {
    root().join("tests/proposer_scenarios.txt")
}

/// A decimal u64 (digits only).
fn num(s: &str, what: &str, at: &str) -> u64 {
    if !s.starts_with(|c: char| c.is_ascii_digit()) {
        panic!("{at}: {what}: {s:?} is not a decimal number");
    }
    s.parse::<u64>()
        .unwrap_or_else(|e| panic!("{at}: {what}: {s:?} is not a decimal number: {e}"))
}

/// `-` or `term@lsn,term@lsn,...`.
fn history(s: &str, at: &str) -> TermHistory {
    if s == "-" {
        return TermHistory::default();
    }
    TermHistory(
        s.split(',')
            .map(|e| {
                let (term, lsn) = e
                    .split_once('@')
                    .unwrap_or_else(|| panic!("{at}: history entry {e:?} is not term@lsn"));
                TermSwitch {
                    term: num(term, "history term", at),
                    lsn: Lsn(num(lsn, "history LSN", at)),
                }
            })
            .collect(),
    )
}

fn format_history(h: &TermHistory) -> String {
    if h.0.is_empty() {
        return "-".to_string();
    }
    h.0.iter()
        .map(|s| format!("{}@{}", s.term, s.lsn.0))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_vote(rest: &str, at: &str) -> Vote {
    let mut v = VoteResponse {
        term: 0,
        vote_given: false,
        flush_lsn: Lsn(0),
        truncate_lsn: Lsn(0),
        term_history: TermHistory::default(),
        timeline_start_lsn: Lsn(0),
    };
    let mut late = false;
    let (mut has_term, mut has_given, mut has_flush) = (false, false, false);
    for tok in rest.split_whitespace() {
        if tok == "late" {
            late = true;
            continue;
        }
        let (key, val) = tok
            .split_once('=')
            .unwrap_or_else(|| panic!("{at}: vote field {tok:?} is not key=value or late"));
        match key {
            "term" => {
                v.term = num(val, "term", at);
                has_term = true;
            }
            "given" => {
                v.vote_given = match val {
                    "0" => false,
                    "1" => true,
                    _ => panic!("{at}: given={val}: 0 or 1"),
                };
                has_given = true;
            }
            "flush" => {
                v.flush_lsn = Lsn(num(val, "flush", at));
                has_flush = true;
            }
            "truncate" => v.truncate_lsn = Lsn(num(val, "truncate", at)),
            "tlstart" => v.timeline_start_lsn = Lsn(num(val, "tlstart", at)),
            "history" => v.term_history = history(val, at),
            _ => panic!("{at}: unknown vote field {key:?}"),
        }
    }
    assert!(
        has_term && has_given && has_flush,
        "{at}: a vote needs term=, given= and flush="
    );
    Vote { response: v, late }
}

fn parse_commit(rest: &str, at: &str) -> Commit {
    let mut epoch_start: Option<Lsn> = None;
    let mut flushes: Option<Vec<Lsn>> = None;
    for tok in rest.split_whitespace() {
        let (key, val) = tok
            .split_once('=')
            .unwrap_or_else(|| panic!("{at}: commit field {tok:?} is not key=value"));
        match key {
            "epoch_start" => epoch_start = Some(Lsn(num(val, "epoch_start", at))),
            "flushes" => {
                flushes = Some(if val == "-" {
                    Vec::new()
                } else {
                    val.split(',')
                        .map(|f| Lsn(num(f, "flush LSN", at)))
                        .collect()
                })
            }
            _ => panic!("{at}: unknown commit field {key:?}"),
        }
    }
    match (epoch_start, flushes) {
        (Some(epoch_start), Some(flushes)) => Commit {
            epoch_start,
            flushes,
        },
        _ => panic!("{at}: a commit check needs epoch_start= and flushes="),
    }
}

fn parse_scenarios(path: &Path) -> Vec<Scenario> {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut out = Vec::new();
    let mut cur: Option<Scenario> = None;
    for (i, raw) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (kw, rest) = match line.split_once(char::is_whitespace) {
            Some((kw, rest)) => (kw, rest.trim()),
            None => (line, ""),
        };
        if kw == "scenario" {
            if let Some(s) = &cur {
                panic!("{at}: scenario {} has no end", s.name);
            }
            assert!(
                !rest.is_empty() && !rest.contains(char::is_whitespace),
                "{at}: scenario needs one name"
            );
            cur = Some(Scenario {
                name: rest.to_string(),
                line: i + 1,
                walkeepers: None,
                term: None,
                bootstrap: Lsn(0),
                votes: Vec::new(),
                commits: Vec::new(),
                expect: Vec::new(),
            });
            continue;
        }
        if kw == "end" {
            let s = cur
                .take()
                .unwrap_or_else(|| panic!("{at}: end outside a scenario"));
            assert!(
                s.walkeepers.is_some(),
                "{at}: scenario {} has no walkeepers line",
                s.name
            );
            out.push(s);
            continue;
        }
        let s = cur
            .as_mut()
            .unwrap_or_else(|| panic!("{at}: {kw:?} outside a scenario"));
        match kw {
            "walkeepers" => s.walkeepers = Some(num(rest, "walkeepers", &at) as usize),
            "term" => s.term = Some(num(rest, "term", &at)),
            "bootstrap" => s.bootstrap = Lsn(num(rest, "bootstrap", &at)),
            "vote" => s.votes.push(parse_vote(rest, &at)),
            "commit" => s.commits.push(parse_commit(rest, &at)),
            "expect" => s
                .expect
                .push(rest.split_whitespace().collect::<Vec<_>>().join(" ")),
            _ => panic!("{at}: unknown keyword {kw:?}"),
        }
    }
    if let Some(s) = cur {
        panic!("{}: scenario {} has no end", path.display(), s.name);
    }
    out
}

/// What `walkeeper::proposer` decides, in the lines of the scenario file.
fn rust_outcome(s: &Scenario) -> Vec<String> {
    let q = quorum(s.walkeepers.unwrap());
    let mut out = vec![format!("quorum {q}")];
    if let Some(term) = s.term {
        // As model.rs's on_vote: an answer of another term is ignored, and
        // before the election only a vote given counts.
        let counted: Vec<usize> = (0..s.votes.len())
            .filter(|&i| {
                let v = &s.votes[i];
                !v.late && v.response.term == term && v.response.vote_given
            })
            .collect();
        out.push(format!("votes {}", counted.len()));
        if counted.len() < q {
            out.push("elected no".to_string());
        } else {
            let votes: Vec<VoteResponse> = counted
                .iter()
                .map(|&i| s.votes[i].response.clone())
                .collect();
            let e = elect(term, &votes, s.bootstrap).expect("elect with votes");
            let donor = counted[choose_donor(&votes).expect("a donor among votes")];
            out.push("elected yes".to_string());
            out.push(format!("donor {donor}"));
            out.push(format!("epoch_start {}", e.epoch_start_lsn.0));
            out.push(format!("history {}", format_history(&e.history)));
            out.push(format!("truncate {}", e.truncate_lsn.0));
            out.push(format!("timeline_start {}", e.timeline_start_lsn.0));
            // ProposerElected goes to the voters, and to every walkeeper of
            // our term that answered after the election, vote or not.
            for (i, v) in s.votes.iter().enumerate() {
                let elected_msg = if v.late {
                    v.response.term == term
                } else {
                    counted.contains(&i)
                };
                if elected_msg {
                    let start = start_streaming_at(
                        &e.history,
                        &v.response.term_history,
                        v.response.flush_lsn,
                        e.truncate_lsn,
                    );
                    out.push(format!("start {i} {}", start.0));
                }
            }
        }
    }
    for (k, c) in s.commits.iter().enumerate() {
        let commit = commit_lsn(&c.flushes, q, c.epoch_start);
        out.push(format!("commit {k} {}", commit.0));
    }
    out
}

/// Build the C harness from the extension's own source.
fn build_harness() -> PathBuf {
    let zenith = root().join("../vendor/postgres/contrib/zenith");
    let harness = root().join("tests/c_harness");
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("proposer_c_harness");
    let cc = std::env::var("CC").unwrap_or_default();
    let cc = if cc.trim().is_empty() {
        "cc".to_string()
    } else {
        cc
    };
    // CC may carry flags ("gcc -m64").
    let mut words = cc.split_whitespace();
    let program = words.next().unwrap();
    let output = Command::new(program)
        .args(words)
        .arg("-Wall")
        .arg("-I")
        .arg(harness.join("include"))
        .arg("-I")
        .arg(&zenith)
        .arg("-o")
        .arg(&exe)
        .arg(harness.join("harness.c"))
        .arg(zenith.join("walproposer_decide.c"))
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e} (set CC)"));
    assert!(
        output.status.success(),
        "{cc} could not build the walproposer harness:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// What the C functions decide, per scenario name.
fn c_outcomes(exe: &Path, scenarios: &Path) -> BTreeMap<String, Vec<String>> {
    let output = Command::new(exe)
        .arg(scenarios)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", exe.display()));
    assert!(
        output.status.success(),
        "the C harness failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("harness output is UTF-8");
    let mut out = BTreeMap::new();
    let mut cur: Option<(String, Vec<String>)> = None;
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("scenario ") {
            assert!(
                cur.is_none(),
                "harness output: scenario {name} inside another"
            );
            cur = Some((name.to_string(), Vec::new()));
        } else if line == "end" {
            let (name, lines) = cur.take().expect("harness output: end outside a scenario");
            assert!(
                out.insert(name.clone(), lines).is_none(),
                "harness output: scenario {name} twice"
            );
        } else {
            cur.as_mut()
                .unwrap_or_else(|| panic!("harness output: {line:?} outside a scenario"))
                .1
                .push(line.to_string());
        }
    }
    assert!(cur.is_none(), "harness output ends inside a scenario");
    out
}

fn diff(want: &[String], got: &[String], who: &str) -> String {
    let mut s = String::new();
    for i in 0..want.len().max(got.len()) {
        let w = want.get(i).map_or("(nothing)", |x| x.as_str());
        let g = got.get(i).map_or("(nothing)", |x| x.as_str());
        let mark = if w == g { ' ' } else { '!' };
        s += &format!("    {mark} {w:<40} {who}: {g}\n");
    }
    s
}

#[test]
fn c_and_rust_proposers_decide_alike() {
    let path = scenario_file();
    let scenarios = parse_scenarios(&path);
    assert!(
        scenarios.len() >= 30,
        "only {} scenarios in {}",
        scenarios.len(),
        path.display()
    );
    let mut names = BTreeSet::new();
    for s in &scenarios {
        assert!(
            names.insert(s.name.as_str()),
            "scenario {} twice in {}",
            s.name,
            path.display()
        );
    }

    let exe = build_harness();
    let c = c_outcomes(&exe, &path);
    assert_eq!(
        c.len(),
        scenarios.len(),
        "the C harness ran {} scenarios of {}",
        c.len(),
        scenarios.len()
    );

    let mut failures = Vec::new();
    for s in &scenarios {
        let rust = rust_outcome(s);
        if rust != s.expect {
            failures.push(format!(
                "scenario {} (line {}): walkeeper::proposer (Rust) disagrees with the expectation:\n{}",
                s.name,
                s.line,
                diff(&s.expect, &rust, "Rust")
            ));
        }
        match c.get(&s.name) {
            None => failures.push(format!("scenario {}: missing from the C output", s.name)),
            Some(c) if *c != s.expect => failures.push(format!(
                "scenario {} (line {}): walproposer_decide.c (C) disagrees with the expectation:\n{}",
                s.name,
                s.line,
                diff(&s.expect, c, "C")
            )),
            Some(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches over {} scenarios of {}:\n{}",
        failures.len(),
        scenarios.len(),
        path.display(),
        failures.join("\n")
    );
}
