"""Benchmark tables and figures, regenerated from the committed results under ``benchmarks/results/``.

One function per benchmark page writes ``docs/_generated/bench/<name>.md`` (included by
``docs/benchmarks/<name>.md``) from whatever files are there at build time: a missing file gives
"not run" on the page, a new file in a results folder is listed (figures are shown), so results that
other sessions commit appear without editing the docs. Nothing here measures anything.

Results written as ``{"benchmark", "command", "provenance", "machine", "tables": [{"title",
"columns", "rows"}]}`` (the transcribed tables of the timing benchmarks) render generically.
"""
from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

__all__ = ["PAGES", "generate", "headlines"]


def _cell(s) -> str:
    return " ".join(str(s).split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _table(columns, rows) -> str:
    out = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:  # a results tree outside the repository (tests)
        return str(p)


class Page:
    """Collects one generated page: text, and figures copied next to it."""

    def __init__(self, name: str, out: Path):
        self.name, self.out, self.parts = name, out, []
        self.fig_dir = out / name
        self.fig_dir.mkdir(parents=True, exist_ok=True)

    def add(self, text: str) -> None:
        self.parts.append(text.rstrip() + "\n")

    def figure(self, png: Path, alt: str) -> None:
        dest = self.fig_dir / png.name
        shutil.copyfile(png, dest)
        self.add(f"![{_cell(alt)}](/_generated/bench/{self.name}/{png.name})\n\n*`{_rel(png)}`*\n")

    def not_run(self, what: str, command: str) -> None:
        self.add(f"```{{note}}\nNot run: {what} has no committed results file. Reproduce with `{command}`.\n```\n")

    def files(self, folder: Path, pattern: str = "*") -> None:
        fs = sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []
        if fs:
            self.add("Committed results files: " + ", ".join(f"`{_rel(p)}`" for p in fs) + ".\n")

    def write(self) -> Path:
        p = self.out / f"{self.name}.md"
        p.write_text("\n".join(self.parts))
        return p


def _transcribed(page: Page, path: Path) -> None:
    d = json.loads(path.read_text())
    page.add(f"Command: `{d['command']}`. Source: `{_rel(path)}` — {d.get('provenance', 'measured')}. "
             f"Machine: {d.get('machine', 'see the file')}.\n")
    for t in d["tables"]:
        page.add(f"**{_cell(t['title'])}**\n")
        page.add(_table(t["columns"], t["rows"]))


def _generic(name: str, title_cmd: str):
    def gen(page: Page) -> None:
        folder = RESULTS / name
        p = folder / f"{name}.json"
        if not p.is_file():
            page.not_run(name, title_cmd)
            return
        _transcribed(page, p)
        for other in sorted(folder.glob("*.json")):  # later runs next to the main file (same format)
            if other != p and "tables" in json.loads(other.read_text()):
                page.add(f"\n**`{other.name}`**\n")
                _transcribed(page, other)
        for png in sorted(folder.glob("*.png")):
            page.figure(png, f"{name}: {png.stem}")
    return gen


# ---- standard CDP benchmark ---------------------------------------------------------------------

def _cdp_table(d: dict) -> str:
    groups = {}
    for r in d["rows"]:
        groups.setdefault((r.get("noise", "?"), r.get("n_masks", "?")), []).append(r)
    out = []
    for (noise, L), rows in groups.items():
        alphas = sorted({r["alpha"] for r in rows})
        methods = list(dict.fromkeys((r["method"], r.get("kind", "")) for r in rows))
        best = {a: max((r["psnr_mean"] for r in rows if r["alpha"] == a and r.get("kind") == "classical"), default=None)
                for a in alphas}
        free = {a: max((r["psnr_mean"] for r in rows if r["alpha"] == a and r.get("kind") != "learned"), default=None)
                for a in alphas}
        cols = ["method", "kind"] + [f"α = {a:g}: PSNR dB (vs best classical)" for a in alphas] + \
               [f"SSIM ({' / '.join(f'{a:g}' for a in alphas)})", "s / image"]
        body = []
        for m, kind in methods:
            by_a = {r["alpha"]: r for r in rows if r["method"] == m}
            cells = [m, kind]
            for a in alphas:
                r = by_a.get(a)
                if r is None:
                    cells.append("·")
                    continue
                s = f"{r['psnr_mean']:.2f}"
                if kind == "learned" and best[a] is not None and free[a] is not None:
                    s += f" ({r['psnr_mean'] - best[a]:+.2f} / {r['psnr_mean'] - free[a]:+.2f})"
                elif kind != "classical" and best[a] is not None:
                    s += f" ({r['psnr_mean'] - best[a]:+.2f})"
                cells.append(s)
            cells.append(" / ".join(f"{by_a[a]['ssim_mean']:.3f}" if a in by_a and "ssim_mean" in by_a[a] else "·"
                                    for a in alphas))
            secs = [by_a[a]["seconds_per_image"] for a in alphas if a in by_a and "seconds_per_image" in by_a[a]]
            cells.append(f"{min(secs):.2f}–{max(secs):.2f}" if secs else "·")
            body.append(cells)
        out.append(f"**noise model `{noise}`, L = {L}**\n\n" + _table(cols, body))
    return "\n".join(out)


def _tuning_section(p: Path, d: dict) -> str:
    """A tuning file of ``benchmarks/tune_regularised.py``: the best TV / PnP-NLM setting per α on
    the tuning images (never the benchmark ones)."""
    body = []
    for a, v in d["alphas"].items():
        for m, b in v.get("best", {}).items():
            body.append([a, m, _cell(json.dumps(b.get("settings", {}))), f"{b.get('psnr_mean', float('nan')):.2f}",
                         f"{b.get('seconds_per_image', float('nan')):.2f}"])
    levels = d.get("mask_levels") or "continuous"
    return (f"## `{p.name}`: regularised solvers re-tuned for L = {d['n_masks']}, mask levels {levels}\n\n"
            f"Tuning images {_cell(', '.join(d.get('images', [])))} ({d.get('size', '?')}², mask seed "
            f"{d.get('mask_seed', '?')}); the best setting per α of the grid {_cell(json.dumps(d.get('grid', {})))}, "
            f"used by the rows `tv-tuned` / `pnp-nlm-tuned` (`--tuned`). Command: "
            f"`{_cell(d.get('command', 'python benchmarks/tune_regularised.py'))}` ({d.get('seconds', '?')} s).\n\n"
            + _table(["α", "method", "setting", "PSNR on tuning images (dB)", "s / image"], body) + "\n")


def gen_cdp_benchmark(page: Page) -> None:
    folder = RESULTS / "cdp_benchmark"
    jsons = sorted(folder.glob("*.json"))
    if not jsons:
        page.not_run("the standard CDP benchmark", "python benchmarks/cdp_benchmark.py --json out/cdp.json")
        return
    for p in jsons:
        d = json.loads(p.read_text())
        if "rows" not in d:
            if "alphas" in d and "n_masks" in d:
                page.add(_tuning_section(p, d))
            continue
        proto = d.get("protocol", {})
        page.add(f"## `{p.name}`\n")
        page.add(f"Images: {_cell(', '.join(proto.get('names', [])))} ({proto.get('size', '?')}², "
                 f"{proto.get('n_masks', '?')} masks, {_cell(proto.get('masks', ''))}). Mean PSNR over the images "
                 f"(0–255 scale); in brackets the difference to the best classical row (for a learned row also, "
                 f"after the slash, to the best training-free row, classical or regularised). Command: "
                 f"`{_cell(proto.get('command', 'python benchmarks/cdp_benchmark.py'))}`.\n")
        page.add(_cdp_table(d))
    page.add("## Figures\n")
    for png in sorted(folder.glob("*.png")):
        page.figure(png, f"standard CDP benchmark: {png.stem}")
    page.files(folder)


# ---- solvers --------------------------------------------------------------------------------------

def gen_solvers(page: Page) -> None:
    folder = RESULTS / "solvers"
    p = folder / "solvers.json"
    if p.is_file():
        _transcribed(page, p)
    else:
        page.not_run("solvers", "python benchmarks/solvers.py")


def gen_solvers_protocol(page: Page) -> None:
    p = RESULTS / "solvers_protocol.json"
    if not p.is_file():
        page.not_run("the protocol table", "OMP_NUM_THREADS=1 python benchmarks/solvers.py --protocol --json FILE")
    else:
        d = json.loads(p.read_text())
        page.add(f"Command: `{_cell(d.get('command', ''))}`. Source: `{_rel(p)}`. Protocol: {_cell(d.get('protocol', ''))}.\n")
        alphas = sorted({r["alpha"] for r in d["rows"]})
        names = list(dict.fromkeys(r["row"] for r in d["rows"]))
        by = {(r["row"], r["alpha"]): r for r in d["rows"]}
        ref = names[0]
        cols = ["solver (defaults)"] + [f"α = {a:g}" for a in alphas] + \
               [f"Δ vs {ref} ({' / '.join(f'{a:g}' for a in alphas)})", f"s / image ({' / '.join(f'{a:g}' for a in alphas)})"]
        body = []
        for n in names:
            row = [n] + [f"{by[(n, a)]['mean']:.2f}" if (n, a) in by else "·" for a in alphas]
            row.append(" / ".join(f"{by[(n, a)]['mean'] - by[(ref, a)]['mean']:+.1f}" if (n, a) in by and (ref, a) in by
                                  else "·" for a in alphas))
            row.append(" / ".join(f"{by[(n, a)]['s_per_image']:.2f}" if (n, a) in by else "·" for a in alphas))
            body.append(row)
        page.add(_table(cols, body))
    p = RESULTS / "solvers" / "solvers_noiseless.json"
    if p.is_file():
        _transcribed(page, p)


# ---- distillation ---------------------------------------------------------------------------------

def _demote(md: str, levels: int = 2) -> str:
    return re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + levels) + " ", md, flags=re.M)


def gen_distillation(page: Page) -> None:
    folder = RESULTS / "distillation"
    summ = folder / "distillation_summary.md"
    if not summ.is_file():
        page.not_run("the distillation benchmark", "python benchmarks/distillation.py --quick")
        return
    page.add("## Per regime and per row\n")
    page.add(f"From `{_rel(summ)}` (written by the benchmark).\n")
    page.add(_demote(summ.read_text()))
    for png in sorted(folder.glob("*.png")):
        page.figure(png, f"distillation: {png.stem}")
    full = folder / "distillation.md"
    if full.is_file():
        page.add("## Every row\n")
        page.add(f"From `{_rel(full)}`.\n")
        page.add(_demote(full.read_text()))
    page.files(folder)
    unf = RESULTS / "distillation_unfolded"
    page.add("## With the deep-unfolding reconstructor (issue 17)\n")
    if not (unf / "distillation_summary.md").is_file():
        page.not_run("the distillation benchmark with --reconstructor unfolded",
                     "python benchmarks/distillation.py --reconstructor unfolded --workers 1 --threads 1")
        return
    for name in ("side_by_side.md", "distillation_summary.md"):
        if (unf / name).is_file():
            page.add(f"From `{_rel(unf / name)}` (written by the benchmark).\n")
            page.add(_demote(_demote((unf / name).read_text())))
    for png in sorted(unf.glob("*.png")):
        page.figure(png, f"distillation (unfolded): {png.stem}")
    page.files(unf)


# ---- calibration coverage --------------------------------------------------------------------------

_PARAM_SCALE = {"distance_m": (1e6, "µm"), "magnification": (1e6, "ppm"), "rotation_rad": (1e3, "mrad"),
                "shift_x_m": (1e9, "nm"), "shift_y_m": (1e9, "nm"), "crosstalk_sigma_m": (1e9, "nm")}


def gen_calibration_coverage(page: Page) -> None:
    p = RESULTS / "calibration_coverage.json"
    if not p.is_file():
        page.not_run("calibration coverage", "PYTHONPATH=. python benchmarks/calibration_coverage.py --benches 10")
        return
    d = json.loads(p.read_text())
    s = d["summary"]
    page.add(f"Source: `{_rel(p)}`. {s.get('n_benches', '?')} benches, {s.get('n_failed', 0)} failed; "
             f"**{100 * s['fraction_within_2sigma']:.0f} % of the scalar values within 2σ** "
             f"({100 * s['fraction_within_2sigma_statistical_only']:.0f} % with σ_stat alone).\n")
    cols = ["parameter", "within 2σ", "mean Δ/σ", "mean |Δ|/σ", "mean |Δ|/σ_stat", "mean Δ (remaining bias)", "mean σ",
            "mean σ_model"]
    body = []
    for k, v in s.get("per_param", {}).items():
        scale, unit = _PARAM_SCALE.get(k, (1.0, ""))
        if k == "magnification":
            fmt = (lambda x: f"{x * 1e6:+.0f} ppm")
        else:
            fmt = (lambda x, scale=scale, unit=unit: f"{x * scale:+.3g} {unit}".strip())
        body.append([k, f"{100 * v['within_2sigma']:.0f} %", f"{v['mean_z']:+.2f}", f"{v['mean_abs_z']:.2f}",
                     f"{v['mean_abs_z_statistical']:.2f}", fmt(v["mean_delta"]), fmt(v["mean_std"]).lstrip("+"),
                     fmt(v["mean_std_model"]).lstrip("+")])
    page.add(_table(cols, body))
    lut = d.get("lut") or []
    if lut:
        page.add("**LUT levels, per bench**\n")
        page.add(_table(["bench", "RMS error rad", "mean σ rad", "within 2σ", "mean |Δ|/σ", "max |Δ|/σ"],
                        [[r["bench"], f"{r['rms_error_rad']:.4f}", f"{r['mean_std_rad']:.4f}",
                          f"{100 * r['within_2sigma']:.0f} %", f"{r['mean_abs_z']:.2f}", f"{r['max_abs_z']:.2f}"] for r in lut]))


# ---- learned reconstruction (unfolding) -------------------------------------------------------------

def gen_unfolding(page: Page) -> None:
    folder = RESULTS / "unfolding"
    if not folder.is_dir() or not any(folder.iterdir()):
        page.not_run("the learned reconstructor", "python benchmarks/train_cdp_model.py --help")
        return
    for log in sorted(folder.glob("*.log")):
        rows = re.findall(r"α=(\S+): learned ([\d.]+) dB, ER ([\d.]+) dB, gain ([+\-\d.]+) dB", log.read_text())
        if rows:
            page.add(f"**Evaluation, `{_rel(log)}`**\n")
            page.add(_table(["α", "learned (dB)", "ER 200 (dB)", "learned − ER (dB)"], rows))
        for line in log.read_text().splitlines():
            if "inference" in line or "shipped" in line:
                page.add(f"- `{_cell(line.strip())}`")
    for c in sorted(folder.glob("*.csv")):
        with c.open() as fh:
            rows = list(csv.reader(fh))
        if len(rows) < 2:
            continue
        page.add(f"\n**`{_rel(c)}`** ({len(rows) - 1} rows{', last 12 shown' if len(rows) > 13 else ''})\n")
        body = [[(f"{float(x):.4g}" if re.fullmatch(r"-?[\d.]+(e-?\d+)?", x) else x) for x in r] for r in rows[1:][-12:]]
        page.add(_table(rows[0], body))
    for png in sorted(folder.glob("*.png")):
        page.figure(png, f"learned reconstruction: {png.stem}")
    for js in sorted(folder.glob("*.json")):
        page.add(f"\n**`{_rel(js)}`**\n\n```json\n{js.read_text()[:4000].rstrip()}\n```\n")
    page.files(folder)


# ---- mutation ---------------------------------------------------------------------------------------

def _mutation_modules() -> list[str]:
    """The modules ``make mutate`` covers (keys of ``[tool.phaseforge.mutation.tests]``)."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return list(data.get("tool", {}).get("phaseforge", {}).get("mutation", {}).get("tests", {}))


def _mutation_latest(runs: list[Path]) -> str:
    """Each module's state in its newest run file: the goal is ≥ 95 % of non-equivalent mutants
    killed, with mutants no test ran counted against it."""
    latest = {}
    for p in runs:                                   # sorted by time: later runs overwrite
        d = json.loads(p.read_text())
        for mod, m in d.get("modules", {}).items():
            latest[mod] = (p, m.get("counts", {}))
    from fnmatch import fnmatch

    keys = _mutation_modules()
    for key in [k for k in keys if "*" in k]:       # a glob (learning/solvers/*.py): its files summed
        files = [m for m in latest if m != key and fnmatch(m, key)]
        if files:
            names = ("mutants", "killed", "survived", "equivalent", "not run")
            latest[key] = (max(latest[m][0] for m in files),
                           {n: sum(latest[m][1].get(n, 0) for m in files) for n in names})
            for m in files:
                del latest[m]
    body = []
    for mod in keys + sorted(set(latest) - set(keys)):
        if mod not in latest:
            body.append([f"`{mod}`", "not run yet", "", "", "", "", "", "", ""])
            continue
        p, c = latest[mod]
        non_eq = c.get("killed", 0) + c.get("survived", 0) + c.get("not run", 0)
        rate = 100.0 * c.get("killed", 0) / non_eq if non_eq else float("nan")
        body.append([f"`{mod}`", f"`{p.stem}`", c.get("mutants", ""), c.get("killed", ""), c.get("survived", ""),
                     c.get("equivalent", ""), c.get("not run", ""), f"{rate:.1f} %",
                     "met" if rate >= 95.0 else "not met"])
    return ("**Latest state of each module** (its newest run file; killed ÷ non-equivalent counts the "
            "mutants no test ran against the goal of ≥ 95 %):\n\n"
            + _table(["module", "newest run", "mutants", "killed", "survived", "equivalent", "not run",
                      "killed ÷ non-equivalent", "goal"], body)
            + "\nEvery run, oldest first:\n")


def gen_mutation(page: Page) -> None:
    folder = RESULTS / "mutation"
    runs = sorted(folder.glob("run-*.json"))
    if not runs:
        page.not_run("mutation testing", "make mutate")
        return
    page.add(_mutation_latest(runs))
    body = []
    for p in runs:
        d = json.loads(p.read_text())
        for mod, m in d.get("modules", {}).items():
            c = m.get("counts", {})
            body.append([f"`{p.stem}`", f"`{mod}`", c.get("mutants", ""), c.get("killed", ""), c.get("survived", ""),
                         c.get("equivalent", ""), c.get("not run", ""), f"{c.get('score_pct', '')} %",
                         f"{d.get('seconds', '')} s"])
    page.add(_table(["run", "module", "mutants", "killed", "survived", "equivalent", "not run", "score", "wall time"], body))
    page.add("Notes of each run:\n")
    for p in runs:
        d = json.loads(p.read_text())
        page.add(f"- `{p.stem}` ({_cell(d.get('tool', ''))}): {_cell(d.get('note', ''))}")
    eq = folder / "equivalent.json"
    if eq.is_file():
        d = json.loads(eq.read_text())
        page.add(f"\n**Equivalent mutants** (`{_rel(eq)}`: {len(d)} mutants that cannot change a result)\n")
        page.add(_table(["mutant", "why equivalent"], [[f"`{k}`", v] for k, v in d.items()]))
    page.add("")
    page.files(folder, "*.md")


PAGES = {
    "cdp_benchmark": gen_cdp_benchmark,
    "propagation": _generic("propagation", "python benchmarks/propagation.py --json benchmarks/results/propagation/propagation.json"),
    "simulate": _generic("simulate", "python benchmarks/simulate.py --json benchmarks/results/simulate/simulate.json"),
    "solvers": gen_solvers,
    "solvers_protocol": gen_solvers_protocol,
    "training": _generic("training", "python benchmarks/training.py --json benchmarks/results/training/training.json"),
    "export": _generic("export", "python benchmarks/export.py --json benchmarks/results/export/export.json"),
    "distillation": gen_distillation,
    "calibration_coverage": gen_calibration_coverage,
    "unfolding": gen_unfolding,
    "mutation": gen_mutation,
}


def generate(out_dir) -> list:
    """Write every benchmark page's generated part under ``out_dir``; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, gen in PAGES.items():
        page = Page(name, out)
        gen(page)
        written.append(page.write())
    return written


def headlines() -> list:
    """One (benchmark, headline, command) per benchmark, from the results files (for the index page)."""
    out = []
    p = RESULTS / "cdp_benchmark" / "cdp_benchmark.json"
    if p.is_file():
        rows = json.loads(p.read_text())["rows"]
        prd = [r for r in rows if r.get("noise") == "prdeep"]
        best = {}
        for r in prd:
            if r["alpha"] == 27 and (r["alpha"] not in best or r["psnr_mean"] > best[r["alpha"]]["psnr_mean"]):
                best[r["alpha"]] = r
        er = next((r for r in prd if r["method"] == "er" and r["alpha"] == 27), None)
        if 27 in best and er:
            b = best[27]
            out.append(("standard CDP benchmark", f"α = 27: best {b['method']} {b['psnr_mean']:.2f} dB vs ER {er['psnr_mean']:.2f} dB",
                        "python benchmarks/cdp_benchmark.py"))
    for name in ("propagation", "simulate", "solvers", "training", "export"):
        p = RESULTS / name / f"{name}.json"
        if p.is_file():
            d = json.loads(p.read_text())
            t = d["tables"][0]
            ratio_i = next((i for i, c in enumerate(t["columns"]) if c.startswith("ratio")), None)
            if ratio_i is not None:
                vals = [float(r[ratio_i]) for r in t["rows"] if re.fullmatch(r"[\d.]+", r[ratio_i] or "")]
                if vals:
                    out.append((name, f"ratio to floor {min(vals):.2f}–{max(vals):.2f} ({_cell(t['title'][:60])}…)", d["command"]))
    p = RESULTS / "calibration_coverage.json"
    if p.is_file():
        s = json.loads(p.read_text())["summary"]
        out.append(("calibration coverage", f"{100 * s['fraction_within_2sigma']:.0f} % of fitted values within 2σ",
                    "python benchmarks/calibration_coverage.py --benches 10"))
    return out
