"""The docs cannot drift from the code (docs/, issue 19).

* every H2/H3 heading of the old 1,691-line README (commit da59a39) is mapped, in
  ``docs/development/readme_map.md``, to docs pages that exist;
* the file-format reference: files written by the project's own writers hold exactly the fields
  ``docs/reference/fields.yaml`` documents (the same check the docs build runs), and the check does
  catch an undocumented and a stale field;
* the benchmark pages render whatever results files exist (a missing one says "not run", a new figure
  appears); the CLI reference lists every sub-command and option of the parser;
* README stays one screen (≤ 200 lines) and its links into docs/ point at files.

The full Sphinx build is ``make docs`` / ``make docs-check`` (CI), not a unit test.
"""
import re
import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

#: the H2/H3 headings of the README this documentation replaced (git show da59a39:README.md)
OLD_README_HEADINGS = [
    'Quick start',
    'Command line',
    'Reconstructing measurements from anywhere (`--measurements`, `learning/measured.py`)',
    'The standard CDP protocol: unit-free operator, detector order, noise models',
    'Dataset file layout (format_version "1", `learning/h5io/`)',
    'Crashes and resume',
    'Layout',
    'Physics and conventions (`optics/__init__.py`)',
    'The operator contract (`optics/operator.py`, `optics/cdp.py`)',
    'Interop',
    'Benchmarks',
    'The standard CDP benchmark — `python benchmarks/cdp_benchmark.py`',
    'Propagation and the CDP operator — `python benchmarks/propagation.py`',
    'CDP simulation — `python benchmarks/simulate.py`',
    'Solvers — `python benchmarks/solvers.py`',
    'Standard CDP protocol, regularised reconstructors — `OMP_NUM_THREADS=1 python benchmarks/solvers.py --protocol`',
    'Testing: mutation score, reader fuzzing, loading that runs no code (issue 20)',
    'Limitations (honest list)',
    'Fabrication export — `phaseforge export slm|doe|verify|devices` (`fabrication/`)',
    'Export benchmark — `python benchmarks/export.py [--worst-case]`',
    'Calibration: lab captures → CALIBRATION.h5 → calibrated simulator',
    'Learning: teacher, student, distillation (`learning/`, `phaseforge train | distill | evaluate`)',
    'Training step — `python benchmarks/training.py`',
    'Learned reconstruction (deep unfolding) — `learning/unfolding.py` (issue 17, first sitting)',
    'Does distillation help? — `python benchmarks/distillation.py` (issue 8)',
]


def _readme_map():
    rows = {}
    for line in (DOCS / "development" / "readme_map.md").read_text().splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 2 and not cells[0].startswith("---") and cells[0] != "old README heading":
            rows[cells[0].replace("\\|", "|")] = re.findall(r"`([^`]+\.md)`", cells[1])
    return rows


def test_every_old_readme_heading_is_mapped_to_a_page():
    rows = _readme_map()
    missing = [h for h in OLD_README_HEADINGS if h not in rows]
    assert not missing, f"old README headings without a row in docs/development/readme_map.md: {missing}"
    assert all(rows[h] for h in OLD_README_HEADINGS), "a heading is mapped to no page"


def _mapped_pages(guide: bool):
    pages = sorted({p for ps in _readme_map().values() for p in ps})
    return [p for p in pages if p.startswith("guide/") == guide]


def test_mapped_pages_exist():
    absent = [p for p in _mapped_pages(guide=False) if not (DOCS / p).resolve().is_file()]
    assert not absent, f"readme_map.md names pages that do not exist: {absent}"


def test_mapped_user_guide_pages_exist():
    if not (DOCS / "guide" / "index.md").is_file():
        pytest.skip("docs/guide/ (the user guide) is written on its own branch; checked once merged")
    absent = [p for p in _mapped_pages(guide=True) if not (DOCS / p).is_file()]
    assert not absent, f"readme_map.md names user-guide pages that do not exist: {absent}"


def test_readme_fits_on_a_screen_and_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    targets = re.findall(r"\]\(((?:docs|benchmarks)/[^)#\s]+)", text)
    assert targets, "README links into the docs"
    guide_merged = (DOCS / "guide" / "index.md").exists()
    absent = [t for t in targets if not (ROOT / t).exists() and (guide_merged or not t.startswith(("docs/guide/", "docs/examples/")))]
    assert not absent, f"README links to missing files: {absent}"


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    import pf_formats
    # the CALIBRATION.h5 sample from the same writer with made-up values (the docs build runs the
    # real `phaseforge calibrate`); everything else exactly as the build writes it (≈ 15 s)
    return pf_formats.write_samples(tmp_path_factory.mktemp("formats"), real_calibration=False)


def test_documented_fields_match_the_files_the_writers_write(samples):
    import pf_formats
    assert pf_formats.check(samples) == []


def test_the_format_check_catches_an_undocumented_and_a_stale_field(samples):
    import pf_formats
    doc = pf_formats.load_documented()
    del doc["design"]["run/design.h5"]["/@wavelength_m"]              # the writer writes it: now undocumented
    doc["dataset"]["DATA.h5"]["/@retired_attribute"] = "no writer writes this"   # stale
    problems = pf_formats.check(samples, doc)
    assert any("'/@wavelength_m'" in p and "does not document" in p for p in problems), problems
    assert any("'/@retired_attribute'" in p and "no longer" in p for p in problems), problems
    assert len(problems) == 2, problems


def test_format_tables_take_units_from_the_written_file(samples):
    import pf_formats
    md = pf_formats.render(samples, "dataset")
    row = next(ln for ln in md.splitlines() if ln.startswith("| `/parameters/optics@*`"))
    assert "`m`" in row  # wavelength_m__units = "m" in the file
    row = next(ln for ln in md.splitlines() if ln.startswith("| `/masks`"))
    assert "`rad`" in row and "float32, 3-D" in row


def test_benchmark_pages_render_what_is_committed_and_say_not_run_otherwise(tmp_path, monkeypatch):
    import pf_bench
    written = {p.stem: p.read_text() for p in pf_bench.generate(tmp_path / "real")}
    assert set(written) == set(pf_bench.PAGES)
    rows = json.loads((pf_bench.RESULTS / "cdp_benchmark" / "cdp_benchmark.json").read_text())["rows"]
    for r in rows:  # every committed mean PSNR (e.g. deep unfolding at α = 27) is on the page
        assert f"{r['psnr_mean']:.2f}" in written["cdp_benchmark"], (r["method"], r["alpha"])
    assert "tv-tuned" in written["cdp_benchmark"]  # the L = 1 table and its tuning file render too
    assert "not run" not in written["cdp_benchmark"].lower()
    assert (tmp_path / "real" / "cdp_benchmark" / "reconstructions.png").is_file()
    # an empty results tree: every page says "not run"; a new figure in a folder appears
    empty = tmp_path / "results"
    (empty / "cdp_benchmark").mkdir(parents=True)
    shutil.copyfile(pf_bench.RESULTS / "cdp_benchmark" / "cdp_benchmark.json", empty / "cdp_benchmark" / "cdp_benchmark.json")
    shutil.copyfile(pf_bench.RESULTS / "distillation" / "distillation.png", empty / "cdp_benchmark" / "new_figure.png")
    monkeypatch.setattr(pf_bench, "RESULTS", empty)
    written = {p.stem: p.read_text() for p in pf_bench.generate(tmp_path / "empty")}
    assert "new_figure.png" in written["cdp_benchmark"]
    assert all("Not run" in text for name, text in written.items() if name != "cdp_benchmark"), \
        [n for n, t in written.items() if "Not run" not in t]


def test_cli_reference_lists_every_subcommand_and_option():
    import argparse

    import pf_cli
    from phaseforge.cli import _parser
    parser = _parser()
    md = pf_cli.cli_markdown(parser)
    n = 0
    for words, p, _ in pf_cli.walk_parsers(parser):
        assert f"## {' '.join(words)}\n" in md
        for a in p._actions:
            if a.option_strings and a.help is not argparse.SUPPRESS and not isinstance(a, argparse._HelpAction):
                assert a.option_strings[-1] in md, (words, a.option_strings)
                n += 1
    assert "## phaseforge export slm" in md and "--carrier-period-px" in md and n > 100
