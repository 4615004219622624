"""Sphinx extension of the phaseforge docs: generates, before the sources are read, every page part
that comes from the code or from committed results (so none of it can drift), and checks the gallery.

Written into ``docs/_generated/`` (git-ignored, excluded from the page list; pages include its files):

* ``cli.md``, ``config.md`` — the argparse parser of :mod:`phaseforge.cli` and ``phaseforge config``
  (:mod:`pf_cli`);
* ``formats/<format>.md`` — field tables of every file format, from files written at build time by the
  project's own writers and checked against ``docs/reference/fields.yaml`` (:mod:`pf_formats`);
* ``bench/<name>.md`` and figures — the benchmark tables from ``benchmarks/results/`` (:mod:`pf_bench`).

Into ``docs/reference/api/`` (git-ignored): one autodoc page per package, listing every public module
found on disk, so a new module appears without editing the docs.

Environment: ``PHASEFORGE_DOCS_FAST=1`` (``make docs-check``) writes the CALIBRATION.h5 sample with the
same writer from made-up values instead of running ``phaseforge calibrate`` (≈ 20 s).
"""
from __future__ import annotations

import os
import pkgutil
import re
import shutil
import tempfile
import time
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
#: package → the API page's title; every public module under it is documented
API_PACKAGES = {
    "optics": "optics — propagation, operators, SLM, sensor, files",
    "learning": "learning — datasets, solvers, metrics, networks, training",
    "fabrication": "fabrication — SLM bitmaps, DOE height maps, GDSII, verification",
    "calibration": "calibration — captures, camera, LUT, fit, CALIBRATION.h5",
    "phaseforge": "phaseforge — command line, configuration, pipelines",
}


def public_modules(package: str) -> list:
    """Every importable public module of ``package`` (recursively), from the files on disk."""
    base = ROOT / package.replace(".", "/")
    mods = [package]
    for info in pkgutil.iter_modules([str(base)]):
        if info.name.startswith("_"):
            continue
        name = f"{package}.{info.name}"
        if info.ispkg:
            mods.extend(public_modules(name))
        else:
            mods.append(name)
    return mods


def write_api_pages(api_dir: Path) -> None:
    api_dir.mkdir(parents=True, exist_ok=True)
    for pkg, title in API_PACKAGES.items():
        lines = [f"# {title}\n", "```{eval-rst}"]
        for mod in public_modules(pkg):
            is_pkg = (ROOT / mod.replace(".", "/") / "__init__.py").is_file()
            lines += [f".. automodule:: {mod}"]
            # a package's __init__ re-exports its modules' names: show its docstring only, the
            # members are documented once, in their own module
            lines += ["   :no-members:" if is_pkg else "   :members:", ""]
        lines.append("```\n")
        text = "\n".join(lines)
        p = api_dir / f"{pkg}.md"
        if not p.is_file() or p.read_text() != text:  # unchanged pages keep their mtime (incremental builds)
            p.write_text(text)


def _write_if_changed(p: Path, text: str) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    if not p.is_file() or p.read_text() != text:
        p.write_text(text)


def generate(srcdir, *, fast: bool = False) -> list:
    """Write every generated part under ``srcdir``; return the problems found (strings)."""
    import pf_bench
    import pf_cli
    import pf_formats
    from phaseforge.cli import _parser

    src = Path(srcdir)
    gen = src / "_generated"
    os.environ.setdefault("COLUMNS", "100")  # argparse usage lines wrap at the terminal width
    _write_if_changed(gen / "cli.md", pf_cli.cli_markdown(_parser()))
    _write_if_changed(gen / "config.md", pf_cli.config_markdown())
    write_api_pages(src / "reference" / "api")
    if (gen / "bench").is_dir():
        shutil.rmtree(gen / "bench")
    pf_bench.generate(gen / "bench")
    heads = pf_bench.headlines()
    _write_if_changed(gen / "bench_headlines.md",
                      "| benchmark | headline (from the committed results) | command |\n|---|---|---|\n" +
                      "".join(f"| {b} | {h} | `{c}` |\n" for b, h, c in heads))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="phaseforge-docs-") as tmp:
        samples = pf_formats.write_samples(Path(tmp) / "samples", real_calibration=not fast)
        problems = pf_formats.check(samples)
        for fmt in pf_formats.FORMATS:
            _write_if_changed(gen / "formats" / f"{fmt}.md", pf_formats.render(samples, fmt))
    logger.info(f"phaseforge docs: sample files written and checked in {time.perf_counter() - t0:.1f} s")
    return problems


def _on_builder_inited(app) -> None:
    problems = generate(app.srcdir, fast=os.environ.get("PHASEFORGE_DOCS_FAST", "0") == "1")
    for p in problems:
        logger.warning(f"file formats: {p}", type="phaseforge", subtype="formats")


def _on_build_finished(app, exc) -> None:
    """Every executed gallery example must have produced a figure (a missing one is a warning: -W fails)."""
    if exc is not None or str(app.config.sphinx_gallery_conf.get("plot_gallery", True)) != "True":
        return
    src = Path(app.srcdir)
    gallery = src / "auto_examples"
    for ex in sorted((src / "examples").glob("**/plot_*.py")):
        if not list(gallery.glob(f"**/images/sphx_glr_{ex.stem}_*.png")):
            logger.warning(f"gallery: {ex.relative_to(src)} produced no figure (every example must show one)",
                           type="phaseforge", subtype="gallery")


def _on_missing_reference(app, env, node, contnode):
    """Python references written in docstrings with a short or relative name (``:class:`CDPWriter```
    in a module that imports it, ``:func:`tv``` for a sibling module) or through a package that
    re-exports it (``learning.h5io.CDPWriter``) resolve to the one documented object they name. What still does not resolve inside a *docstring* is
    rendered as plain code and counted (library prose, not a page of these docs); on a docs page it
    stays a warning, so ``-W`` fails on a broken reference there."""
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "").lstrip("~.")
    if not target:
        return None
    domain = env.get_domain("py")
    suffix = "." + target
    hits = sorted({name for name in domain.objects if name.endswith(suffix) or name == target})
    if not hits and "." in target:  # a package re-export: learning.h5io.CDPWriter → learning.h5io.writer.CDPWriter
        package, _, last = target.rpartition(".")
        hits = sorted({name for name in domain.objects if name.startswith(package + ".") and name.endswith("." + last)})
    if len(hits) == 1:
        from sphinx.util.nodes import make_refnode
        obj = domain.objects[hits[0]]
        return make_refnode(app.builder, node["refdoc"], obj.docname, obj.node_id, contnode, hits[0])
    source = node.source or ""
    if "docstring of" in source:
        _UNRESOLVED.add(target)
        return contnode
    return None


_UNRESOLVED: set = set()


def _report_unresolved(app, exc) -> None:
    if _UNRESOLVED:
        logger.info(f"phaseforge docs: {len(_UNRESOLVED)} docstring references to names that are not documented "
                    f"objects were rendered as code: {', '.join(sorted(_UNRESOLVED)[:40])}"
                    + (" …" if len(_UNRESOLVED) > 40 else ""))


def _plain_inline_attribute(self):
    """napoleon reads the first line of an attribute's docstring as ``type: description``; this code
    base states types in annotations and writes prose there ("Pool images kept for validation (early
    stopping, model choice): …"), so the whole docstring is the description."""
    line = self._lines.next()
    descs = [line, *self._dedent(self._consume_to_end())]
    return "", self.__class__(descs, self._config).lines()


_TYPE_RE = re.compile(r"[\w.\[\]`~:, |*-]+", re.ASCII)


def _prose_is_not_a_type(consume_field):
    """Several numpy-style parameter lists here read ``name : what it is`` (no type); napoleon
    would turn "N, samples of the whole (unsharded) dataset." into a type. Text that is not a
    plausible type expression (≤ 4 words of identifiers and punctuation) goes to the description."""
    def wrapped(self, parse_type=True, prefer_type=False):
        name, typ, desc = consume_field(self, parse_type, prefer_type)
        if typ and (not _TYPE_RE.fullmatch(typ) or len(typ.split()) > 4):
            desc = [typ, *desc]
            typ = ""
        return name, typ, desc
    return wrapped


def setup(app):
    from sphinx.ext.napoleon import docstring as napoleon_docstring
    napoleon_docstring.GoogleDocstring._consume_inline_attribute = _plain_inline_attribute
    nd = napoleon_docstring.NumpyDocstring
    if not getattr(nd._consume_field, "_phaseforge", False):
        nd._consume_field = _prose_is_not_a_type(nd._consume_field)
        nd._consume_field._phaseforge = True
    app.connect("missing-reference", _on_missing_reference)
    app.connect("build-finished", _report_unresolved)
    app.connect("builder-inited", _on_builder_inited)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
