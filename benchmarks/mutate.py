"""Mutation testing, one module at a time, each with its own narrowed test selection (``make mutate``).

mutmut 3 reads one ``[tool.mutmut]`` table, and its test selection
(``pytest_add_cli_args_test_selection``) is global: its stats phase runs that whole selection
under tracing, records which tests reach which function, then runs, for each mutant, the tests
that reached the mutated function; the fingerprint of the selection is stored, and changing it
resets every result. With the whole suite as the selection, a mutant of a function that the
training tests also reach runs those too (≈ 0.2 mutants/s on 2 cores); with a module's own test
files, 3–6 mutants/s.

So each module listed in ``[tool.phaseforge.mutation] tests`` (pyproject.toml: module path or
glob → its test files) gets its own mutmut working folder ``mutants/<slug>/`` (gitignored, as
all of ``mutants/``): links to the sources, tests and data, and a ``pyproject.toml`` equal to
the project's except that ``[tool.mutmut]`` mutates only that module and selects only its tests.
mutmut's state (``mutants/<slug>/mutants/``) is therefore per module and incremental:

1. mutants that survived, or had no test, in the previous run of the module are re-run by name
   first (mutmut itself keeps a verdict until the mutated *function* changes, so a new test
   would otherwise never get the chance to kill an old survivor);
2. then a plain ``mutmut run``: new mutants and those of changed functions.

A module whose test list changed starts afresh (mutmut sees a new selection fingerprint). At the
end one results file for the run is written (``benchmarks/mutation_report.py``) with each
module's wall time.

    python benchmarks/mutate.py [--modules learning/metrics.py …] [--mutants 'learning.metrics.x_psnr*'] \\
        [--jobs 1] [--note TEXT] [--no-rerun]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from fnmatch import fnmatch
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:                      # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import mutation_report  # noqa: E402

# what a module's mutmut folder links to (read-only use: mutmut copies them into its mutants/)
LINKED = ("tests", "data", "benchmarks", "README.md", "conftest.py")


def slug(module: str) -> str:
    """``learning/solvers/*.py`` → ``learning__solvers``; ``optics/cdp.py`` → ``optics__cdp``."""
    stem = module[:-3] if module.endswith(".py") else module
    return stem.replace("/*", "").replace("*", "").strip("/").replace("/", "__")


def workdir(module: str) -> Path:
    return ROOT / "mutants" / slug(module)


def load_config() -> tuple[dict, dict]:
    """(``[tool.mutmut]``, ``[tool.phaseforge.mutation] tests``) from pyproject.toml."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = data["tool"]
    return tool["mutmut"], tool["phaseforge"]["mutation"]["tests"]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)                     # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} into [tool.mutmut]")


def module_pyproject(module: str, tests: list[str], base: dict) -> str:
    """The project's pyproject.toml with ``[tool.mutmut]`` narrowed to ``module`` and ``tests``."""
    lines, out, skipping = (ROOT / "pyproject.toml").read_text().splitlines(), [], False
    for ln in lines:
        s = ln.strip()
        if s.startswith("[") and s.endswith("]"):
            skipping = s == "[tool.mutmut]"
        if not skipping:
            out.append(ln)
    cfg = dict(base, only_mutate=[module], pytest_add_cli_args_test_selection=list(tests))
    out += ["", "# written by benchmarks/mutate.py for this module only", "[tool.mutmut]"]
    out += [f"{k} = {_toml_value(v)}" for k, v in cfg.items()]
    return "\n".join(out) + "\n"


def prepare(module: str, tests: list[str], base: dict) -> Path:
    wd = workdir(module)
    wd.mkdir(parents=True, exist_ok=True)
    for name in list(base.get("source_paths", [])) + list(LINKED):
        name = name.rstrip("/")
        link, target = wd / name, ROOT / name
        # (re)link when missing, not a link, or a link to another checkout (a copied folder)
        if target.exists() and not (link.is_symlink() and os.readlink(link) == str(target)):
            if link.is_symlink() or link.is_file():
                link.unlink()
            elif link.exists():
                shutil.rmtree(link)
            link.symlink_to(target)
    missing = [t for t in tests if not (ROOT / t.split("::")[0]).exists()]
    if missing:
        raise SystemExit(f"mutate: test files listed for {module} in [tool.phaseforge.mutation] do not exist: {missing}")
    text = module_pyproject(module, tests, {k: v for k, v in base.items()
                                            if k not in ("only_mutate", "pytest_add_cli_args_test_selection")})
    pp = wd / "pyproject.toml"
    if not pp.is_file() or pp.read_text() != text:          # rewrite only on change (mutmut watches it)
        pp.write_text(text)
    return wd


def previous_unkilled(module: str) -> list[str]:
    """Mutants of ``module`` that survived or had no test last time (re-run them: tests may be
    new), except those recorded as equivalent for their current change (no test can kill them)."""
    equivalent = json.loads(mutation_report.EQUIVALENT.read_text()) if mutation_report.EQUIVALENT.is_file() else {}
    names = []
    for meta in mutation_report.metas(module):
        codes = json.loads(meta.read_text()).get("exit_code_by_key", {})
        sources = mutation_report._Sources(meta.with_suffix(""))
        names += [k for k, c in codes.items() if c == 33 or (
            c == 0 and not mutation_report._equivalence(equivalent.get(k), sources.change(k)))]
    return sorted(names)


def mutmut(wd: Path, jobs: int, names: list[str]) -> int:
    exe = Path(sys.executable).with_name("mutmut")
    cmd = [str(exe), "run", "--max-children", str(jobs), *names]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    print(f"mutate: ({wd.relative_to(ROOT)}) mutmut run --max-children {jobs}"
          + (f" <{len(names)} named mutants>" if len(names) > 3 else " " + " ".join(names)), flush=True)
    return subprocess.call(cmd, cwd=wd, env=env)


def _may_match(module: str, glob: str) -> bool:
    """Whether mutant-name glob ``glob`` can name a mutant of ``module`` (``learning/solvers/*.py`` → ``learning.solvers.*``)."""
    dotted = module[:-3].replace("/", ".") if module.endswith(".py") else module.replace("/", ".")
    return fnmatch(dotted.replace("*", "x") + ".x_f__mutmut_1", glob) or glob.startswith(dotted.split("*")[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modules", nargs="*", default=None,
                    help="modules (keys of [tool.phaseforge.mutation] tests); default: all of them")
    ap.add_argument("--mutants", nargs="*", default=[], help="mutant-name globs to (re-)run, e.g. 'learning.metrics.x_psnr*'")
    ap.add_argument("--jobs", type=int, default=1, help="mutmut --max-children (default 1)")
    ap.add_argument("--no-rerun", action="store_true", help="do not re-run last run's survivors first")
    ap.add_argument("--note", default="", help="what this run covered, for the results file")
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args(argv)

    base, mapping = load_config()
    modules = args.modules or [m for m in mapping if not args.mutants or any(_may_match(m, g) for g in args.mutants)]
    unknown = [m for m in modules if m not in mapping]
    if unknown:
        raise SystemExit(f"mutate: no test selection for {unknown} in [tool.phaseforge.mutation] tests "
                         f"(pyproject.toml); known: {', '.join(mapping)}")
    try:
        os.nice(10)
    except OSError:
        pass
    seconds, failed = {}, []
    for module in modules:
        t0 = time.monotonic()
        wd = prepare(module, mapping[module], base)
        print(f"mutate: {module}: tests {' '.join(mapping[module])}", flush=True)
        rc = 0
        if args.mutants:
            rc = mutmut(wd, args.jobs, args.mutants)
        else:
            again = [] if args.no_rerun else previous_unkilled(module)
            if again:
                rc = mutmut(wd, args.jobs, again)
            rc = mutmut(wd, args.jobs, []) or rc
        seconds[module] = round(time.monotonic() - t0, 1)
        print(f"mutate: {module}: {seconds[module]:.0f} s (mutmut exit {rc})", flush=True)
        if rc:
            failed.append(module)
    if not args.no_report:
        mutation_report.write_report(modules, seconds=seconds, note=args.note or "benchmarks/mutate.py --modules " + " ".join(modules),
                                     selection={m: mapping[m] for m in modules})
    if failed:
        print(f"mutate: mutmut failed for {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
