"""Results file of a mutation-testing run (``make mutate``): killed / survived / equivalent per module.

Reads mutmut's state that ``benchmarks/mutate.py`` leaves in ``mutants/<module slug>/mutants/``
(one ``<module>.py.meta`` per mutated module: the exit code of the tests for each mutant) and
``benchmarks/results/mutation/equivalent.json`` (mutant name → why the mutant cannot change any
result: an equivalent mutant, not a missing test), and writes
``benchmarks/results/mutation/run-<UTC time>.json`` and ``.md``: per module the number of
mutants, killed (tests failed or timed out), survived, equivalent, not run (no test reaches the
code, or not checked yet), the score ``killed / (killed + survived)`` over non-equivalent
mutants, and every survivor with its changed line(s) (from the mutated function beside the
original in the mutated copy).

    python benchmarks/mutation_report.py [--seconds S] [--note TEXT] [--modules learning/losses.py …]

(``benchmarks/mutate.py``, which ``make mutate`` calls, writes this file itself at the end of a run.)
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import difflib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
OUT = ROOT / "benchmarks" / "results" / "mutation"
EQUIVALENT = OUT / "equivalent.json"

# mutmut 3's meaning of a mutant's exit code (mutmut/stats.py), reduced to what the report counts
KILLED = {1, 3, 36, 24, -24, 152, 255, 37}      # tests failed, pytest error, timeout, type check
SURVIVED = {0}
NOT_RUN = {None, 5, 33, 34, 2}                   # no test reaches it, skipped, not checked, interrupted


def _status(code) -> str:
    if code in KILLED:
        return "killed"
    if code in SURVIVED:
        return "survived"
    if code in NOT_RUN:
        return "not run"
    return "suspicious"


def metas(module: str) -> list[Path]:
    """mutmut's state files of ``module`` (a path or glob of [tool.phaseforge.mutation] tests).

    ``benchmarks/mutate.py`` runs each module in its own folder ``mutants/<slug>/``, whose mutmut
    state is ``mutants/<slug>/mutants/<file>.py.meta``.
    """
    from mutate import workdir                     # benchmarks/mutate.py (one naming rule)

    state = workdir(module) / "mutants"
    return sorted(m for m in state.glob(module + ".meta") if m.is_file()) if state.is_dir() else []


class _Sources:
    """Original and mutated function sources of one mutated module, parsed once.

    (The former ``ast.get_source_segment`` per function re-split the whole file at every call:
    quadratic in the file's length, > 2 min over all modules. Here the file is split once and
    each def is a slice of it.)
    """

    def __init__(self, mutated_module: Path):
        text = mutated_module.read_text()
        lines = text.splitlines()
        self.funcs = {}
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and "__mutmut_" in node.name:
                self.funcs[node.name] = lines[node.lineno - 1:node.end_lineno]

    def change(self, name: str) -> str:
        """The changed line(s) of mutant ``name`` against the original function (``-old / +new``)."""
        local = name.rsplit(".", 1)[-1]                      # x_f__mutmut_3 or xǁClsǁf__mutmut_3
        base = local.rsplit("__mutmut_", 1)[0]
        orig, mut = self.funcs.get(base + "__mutmut_orig"), self.funcs.get(local)
        if orig is None or mut is None:
            return "?"
        a = [ln.strip() for ln in orig]
        b = [ln.strip().replace(local, base + "__mutmut_orig", 1) if i == 0 else ln.strip() for i, ln in enumerate(mut)]
        diff = [ln for ln in difflib.unified_diff(a, b, lineterm="", n=0) if ln[:1] in "+-" and ln[:3] not in ("---", "+++")]
        minus = [ln for ln in diff if ln.startswith("-")]
        plus = [ln for ln in diff if ln.startswith("+")]
        return " | ".join(minus[:2] + plus[:2])[:400]


def collect(modules) -> dict:
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    report = {}
    for key in modules:
        for meta in metas(key):
            module = str(meta.relative_to(_state_root(meta)))[:-len(".meta")]
            codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
            sources = None
            counts = {"mutants": len(codes), "killed": 0, "survived": 0, "equivalent": 0, "not run": 0, "suspicious": 0}
            survivors, equivalents = [], []
            for name, code in sorted(codes.items()):
                st = _status(code)
                entry = None
                if st == "survived":
                    sources = sources or _Sources(meta.with_suffix(""))
                    entry = {"mutant": name, "change": sources.change(name)}
                    why = _equivalence(equivalent.get(name), entry["change"])
                    if why:
                        st = "equivalent"
                        equivalents.append(dict(entry, why=why))
                    else:
                        if name in equivalent:
                            entry["stale_equivalent_entry"] = equivalent[name]
                        survivors.append(entry)
                counts[st] += 1
            tested = counts["killed"] + counts["survived"]
            counts["score_pct"] = round(100.0 * counts["killed"] / tested, 1) if tested else None
            report[module] = {"counts": counts, "survivors": survivors, "equivalent": equivalents, "group": key}
    return report


def _equivalence(entry, change: str):
    """The reason of an equivalent.json entry, if it still describes this mutant.

    An entry is ``{"change": <the mutant's changed lines, as in the results file>, "why": ...}``:
    mutmut numbers mutants within a function, so after an edit the same name can denote another
    mutation — an entry whose change no longer matches does not count (the survivor is listed,
    with the stale entry, to be reviewed again).
    """
    if entry is None:
        return None
    if isinstance(entry, str):                     # a bare reason (no change recorded): trust the name
        return entry
    return entry["why"] if entry.get("change") == change else None


def _state_root(meta: Path) -> Path:
    """``mutants/<slug>/mutants`` of a state file below it."""
    p = meta.parent
    while p.name != "mutants" or p.parent.parent.name != "mutants":
        p = p.parent
    return p


def write_report(modules, *, seconds=None, note="", selection=None) -> Path:
    """Write ``run-<UTC>.json`` / ``.md`` for ``modules``; ``seconds``: wall time per module (dict) or of the run."""
    report = collect(modules)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    OUT.mkdir(parents=True, exist_ok=True)
    per_module = seconds if isinstance(seconds, dict) else {}
    total = sum(per_module.values()) if per_module else seconds
    doc = {"created": stamp, "tool": "mutmut 3", "seconds": total, "seconds_by_module": per_module,
           "test_selection": selection or {}, "note": note, "modules": report}
    (OUT / f"run-{stamp}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    lines = [f"# Mutation run {stamp}", "", note, "",
             f"Wall time: {total:.0f} s" if total else "Wall time: not recorded", "",
             "| module | mutants | killed | survived | equivalent | not run | score (killed / non-equivalent run) | wall time |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for m, r in report.items():
        c = r["counts"]
        t = per_module.get(r["group"])
        lines.append(f"| {m} | {c['mutants']} | {c['killed']} | {c['survived']} | {c['equivalent']} | {c['not run']} | "
                     f"{'—' if c['score_pct'] is None else str(c['score_pct']) + ' %'} | "
                     f"{'' if t is None else f'{t:.0f} s' + (' (' + r['group'] + ')' if r['group'] != m else '')} |")
    if selection:
        lines += ["", "Test selection per module (`[tool.phaseforge.mutation] tests` in pyproject.toml):", ""]
        lines += [f"- `{m}`: {' '.join(t)}" for m, t in selection.items()]
    for m, r in report.items():
        if r["survivors"]:
            lines += ["", f"## Survivors in {m} ({len(r['survivors'])})", ""]
            lines += [f"- `{s['mutant']}`: `{s['change']}`"
                      + (" — **stale equivalent.json entry** (its change no longer matches)" if "stale_equivalent_entry" in s else "")
                      for s in r["survivors"]]
        if r["equivalent"]:
            lines += ["", f"## Equivalent in {m}", ""]
            lines += [f"- `{s['mutant']}`: `{s['change']}` — {s['why']}" for s in r["equivalent"]]
    path = OUT / f"run-{stamp}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8 + len(report)]))
    print(f"written: {path} (+ .json)")
    return path


def record_equivalent(reasons: dict) -> None:
    """Add/refresh equivalent.json entries ``{mutant: {"change", "why"}}`` from mutmut's state
    (the change text is read from the mutated copy, so the entry is tied to this mutation)."""
    from mutate import load_config

    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    todo = dict(reasons)
    for key in load_config()[1]:
        for meta in metas(key):
            names = set(json.loads(meta.read_text()).get("exit_code_by_key", {})) & set(todo)
            if names:
                sources = _Sources(meta.with_suffix(""))
                for n in names:
                    equivalent[n] = {"change": sources.change(n), "why": todo.pop(n)}
    if todo:
        raise SystemExit(f"not a mutant in mutants/ (run make mutate first): {sorted(todo)}")
    EQUIVALENT.write_text(json.dumps(dict(sorted(equivalent.items())), indent=1, ensure_ascii=False) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=None, help="wall time of the mutmut run")
    ap.add_argument("--note", default="", help="what this run covered (e.g. a partial run)")
    ap.add_argument("--modules", nargs="*", default=None,
                    help="report only these modules (keys of [tool.phaseforge.mutation] tests; default all)")
    ap.add_argument("--equivalent", nargs=2, action="append", metavar=("MUTANT", "WHY"), default=[],
                    help="record MUTANT as equivalent with reason WHY (its change is stored with it); repeatable")
    args = ap.parse_args(argv)
    from mutate import load_config

    if args.equivalent:
        record_equivalent(dict(args.equivalent))
        print(f"recorded {len(args.equivalent)} equivalent mutant(s) in {EQUIVALENT}")
        return 0

    modules = args.modules or list(load_config()[1])
    if not any(metas(m) for m in modules):
        print("no mutmut state under mutants/: run `make mutate` first", file=sys.stderr)
        return 2
    write_report(modules, seconds=args.seconds, note=args.note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
