"""Results file of a mutation-testing run (``make mutate``): killed / survived / equivalent per module.

Reads mutmut's state in ``mutants/`` (one ``<module>.py.meta`` per mutated module: the exit code
of the tests for each mutant) and ``benchmarks/results/mutation/equivalent.json`` (mutant name →
why the mutant cannot change any result: an equivalent mutant, not a missing test), and writes
``benchmarks/results/mutation/run-<UTC time>.json`` and ``.md``: per module the number of mutants,
killed (tests failed or timed out), survived, equivalent, not run (no test reaches the code, or not
checked yet), the score ``killed / (killed + survived)`` over non-equivalent mutants, and every
survivor with its one-line change (from the mutated function beside the original in mutants/).

    python benchmarks/mutation_report.py [--seconds S] [--note TEXT] [--modules learning/losses.py …]
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


def _function_sources(mutated_module: Path) -> dict:
    """name → source of every top-level function/method def in mutmut's mutated module."""
    text = mutated_module.read_text()
    out = {}
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = ast.get_source_segment(text, node) or ""
    return out


def _change(name: str, funcs: dict) -> str:
    """The changed line(s) of mutant ``name`` against the original function (``-old / +new``)."""
    local = name.rsplit(".", 1)[-1]                      # x_f__mutmut_3 or xǁClsǁf__mutmut_3
    base = local.rsplit("__mutmut_", 1)[0]
    orig, mut = funcs.get(base + "__mutmut_orig"), funcs.get(local)
    if orig is None or mut is None:
        return "?"
    a = [ln.strip() for ln in orig.splitlines()[1:]]
    b = [ln.strip() for ln in mut.splitlines()[1:]]
    minus = [ln for ln in difflib.ndiff(a, b) if ln.startswith("- ")]
    plus = [ln for ln in difflib.ndiff(a, b) if ln.startswith("+ ")]
    return " | ".join(minus[:2] + plus[:2])[:400]


def collect(modules=None) -> dict:
    equivalent = json.loads(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else {}
    report = {}
    for meta in sorted((ROOT / "mutants").rglob("*.py.meta")):
        module = str(meta.relative_to(ROOT / "mutants"))[:-len(".meta")]
        if modules and module not in modules:
            continue
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        funcs = _function_sources(meta.with_suffix(""))
        counts = {"mutants": len(codes), "killed": 0, "survived": 0, "equivalent": 0, "not run": 0, "suspicious": 0}
        survivors, equivalents = [], []
        for name, code in sorted(codes.items()):
            st = _status(code)
            if st == "survived" and name in equivalent:
                st = "equivalent"
                equivalents.append({"mutant": name, "change": _change(name, funcs), "why": equivalent[name]})
            counts[st] += 1
            if st == "survived":
                survivors.append({"mutant": name, "change": _change(name, funcs)})
        tested = counts["killed"] + counts["survived"]
        counts["score_pct"] = round(100.0 * counts["killed"] / tested, 1) if tested else None
        report[module] = {"counts": counts, "survivors": survivors, "equivalent": equivalents}
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=None, help="wall time of the mutmut run")
    ap.add_argument("--note", default="", help="what this run covered (e.g. a partial run)")
    ap.add_argument("--modules", nargs="*", default=None, help="report only these modules (paths)")
    args = ap.parse_args(argv)
    if not (ROOT / "mutants").is_dir():
        print("no mutants/ folder: run `make mutate` first", file=sys.stderr)
        return 2
    report = collect(args.modules)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"created": stamp, "tool": "mutmut 3", "seconds": args.seconds, "note": args.note, "modules": report}
    (OUT / f"run-{stamp}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    lines = [f"# Mutation run {stamp}", "", args.note, "",
             f"Wall time: {args.seconds:.0f} s" if args.seconds else "Wall time: not recorded", "",
             "| module | mutants | killed | survived | equivalent | not run | score (killed / non-equivalent run) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for m, r in report.items():
        c = r["counts"]
        lines.append(f"| {m} | {c['mutants']} | {c['killed']} | {c['survived']} | {c['equivalent']} | {c['not run']} | "
                     f"{'—' if c['score_pct'] is None else str(c['score_pct']) + ' %'} |")
    for m, r in report.items():
        if r["survivors"]:
            lines += ["", f"## Survivors in {m} ({len(r['survivors'])})", ""]
            lines += [f"- `{s['mutant']}`: `{s['change']}`" for s in r["survivors"]]
        if r["equivalent"]:
            lines += ["", f"## Equivalent in {m}", ""]
            lines += [f"- `{s['mutant']}`: `{s['change']}` — {s['why']}" for s in r["equivalent"]]
    (OUT / f"run-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:8 + len(report)]))
    print(f"written: {OUT / f'run-{stamp}.md'} (+ .json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
