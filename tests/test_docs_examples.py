"""The documentation's example gallery and user guide, checked without running them.

Executing the gallery scripts belongs to ``make docs`` (sphinx-gallery runs every one and fails the
build on an error); here each script is only compiled and checked for what sphinx-gallery needs — a
module docstring whose first lines are a reStructuredText title — and for a figure, so ``make test``
stays fast. The guide's toctree is checked against the files that exist.
"""
from __future__ import annotations

import ast
import py_compile
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
EXAMPLES = sorted((DOCS / "examples").glob("plot_*.py"))
GUIDE = DOCS / "guide"


def test_the_gallery_has_at_least_eight_examples_and_a_header():
    assert len(EXAMPLES) >= 8, [p.name for p in EXAMPLES]
    header = (DOCS / "examples" / "README.rst").read_text(encoding="utf-8").splitlines()
    assert header[0].strip() and set(header[1].strip()) == {"="} and len(header[1].strip()) >= len(header[0].strip())


def _rst_title(doc: str):
    lines = [ln.rstrip() for ln in doc.strip("\n").splitlines()]
    if len(lines) < 2:
        return None
    title, rule = lines[0].strip(), lines[1].strip()
    if title and rule and set(rule) == {"="} and len(rule) >= len(title):
        return title
    return None


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_compiles_has_a_title_and_draws_a_figure(path, tmp_path):
    py_compile.compile(str(path), cfile=str(tmp_path / (path.stem + ".pyc")), doraise=True)
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = ast.get_docstring(tree, clean=False)
    assert doc, f"{path.name}: sphinx-gallery needs a module docstring"
    assert _rst_title(doc), f"{path.name}: the docstring must start with a title underlined by '='"
    # sphinx-gallery's text cells, and at least one matplotlib figure for the page
    assert "# %%" in source, f"{path.name}: no '# %%' cells"
    assert re.search(r"plt\.(subplots|figure)\(", source), f"{path.name}: draws no matplotlib figure"
    # outputs go to a temporary folder, never into the checkout
    if re.search(r"\.(save|write_text|savefig|imsave)\(|--out", source):
        assert "tempfile" in source, f"{path.name}: writes files but not into a tempfile folder"


def test_every_guide_page_in_the_toctree_exists_and_each_page_is_listed():
    index = (GUIDE / "index.md").read_text(encoding="utf-8")
    block = re.search(r"```\{toctree\}(.*?)```", index, re.S)
    assert block, "guide/index.md has no toctree"
    entries = [ln.strip() for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith(":")]
    assert entries, "empty toctree"
    for name in entries:
        assert (GUIDE / f"{name}.md").is_file(), f"toctree entry {name!r} has no page"
    pages = {p.stem for p in GUIDE.glob("*.md")} - {"index"}
    assert pages == set(entries), f"pages not in the toctree: {sorted(pages - set(entries))}"
