#!/usr/bin/env python3
"""Import circles between the top-level modules of each workspace crate.

For every crate with a `src/lib.rs`, the modules `lib.rs` declares are the
nodes; module A depends on B when code under A (`src/A.rs`, `src/A/**`, its
tests included) names `crate::B`. Comments are skipped (a doc link is no
dependency). Prints each crate's modules in dependency order and exits 1 if
any crate has a cycle, naming it. Run by `make lint`; docs/architecture.md
lists the same order.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MOD_DECL = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([a-z_][a-z0-9_]*)\s*;", re.M)
CRATE_PATH = re.compile(r"\bcrate::(\{[^}]*\}|[a-z_][a-z0-9_]*)")


def code_lines(path: Path):
    for line in path.read_text().splitlines():
        stripped = line.lstrip()
        if stripped.startswith("//"):
            continue
        yield line.split("//")[0] if "://" not in line else line


def deps_of(files, modules):
    deps = set()
    for f in files:
        text = "\n".join(code_lines(f))
        for m in CRATE_PATH.finditer(text):
            group = m.group(1)
            names = re.findall(r"[a-z_][a-z0-9_]*", group) if group.startswith("{") else [group]
            # In a `crate::{a::x, b}` group only the first segment of each path counts.
            if group.startswith("{"):
                names = [p.strip().split("::")[0] for p in group.strip("{}").split(",") if p.strip()]
            deps.update(n for n in names if n in modules)
    return deps


def order(graph):
    """Kahn's order of the modules (dependencies first), or None and a cycle."""
    indeg = {m: len(d) for m, d in graph.items()}
    users = {m: [u for u, d in graph.items() if m in d] for m in graph}
    ready = sorted(m for m, n in indeg.items() if n == 0)
    out = []
    while ready:
        m = ready.pop(0)
        out.append(m)
        for u in users[m]:
            indeg[u] -= 1
            if indeg[u] == 0:
                ready.append(u)
        ready.sort()
    if len(out) == len(graph):
        return out, None
    # Walk the remaining graph to one cycle.
    left = {m for m in graph if m not in out}
    start = min(left)
    path, seen = [start], {start}
    while True:
        nxt = min(d for d in graph[path[-1]] if d in left)
        if nxt in seen:
            return out, path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def main() -> int:
    bad = 0
    for lib in sorted(ROOT.glob("*/src/lib.rs")):
        src = lib.parent
        modules = MOD_DECL.findall(lib.read_text())
        graph = {}
        for m in modules:
            files = [p for p in [src / f"{m}.rs"] if p.exists()]
            files += sorted((src / m).rglob("*.rs")) if (src / m).is_dir() else []
            graph[m] = deps_of(files, set(modules)) - {m}
        done, cycle = order(graph)
        crate = src.parent.name
        if cycle:
            bad += 1
            print(f"{crate}: import circle {' -> '.join(cycle)}")
        else:
            print(f"{crate}: {', '.join(done)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
