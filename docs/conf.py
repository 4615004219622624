"""Sphinx configuration of the phaseforge documentation (``make docs``, ``make docs-check``).

Sphinx + sphinx-gallery + MyST (Markdown pages) + furo, as deepinv's docs: every example in
``docs/examples/plot_*.py`` is a script executed at build time with its figures on its page; the API
reference comes from the docstrings (autodoc + napoleon); the CLI, file-format and benchmark
references are generated from the code and the committed results by ``docs/_ext/pf_docs.py``.

``PHASEFORGE_DOCS_GALLERY=0`` builds without executing the examples (``make docs-check``, CI).
"""
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(DOCS / "_ext"))

from phaseforge import __version__  # noqa: E402

project = "phaseforge"
author = "phaseforge contributors"
copyright = "phaseforge contributors, MIT licence"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.mathjax",
    "sphinx_gallery.gen_gallery",
    "pf_docs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_generated", "Thumbs.db", ".DS_Store", "examples", "reference/fields.yaml"]
# fail on broken internal references (-W makes every warning an error)
nitpicky = True
nitpick_ignore_regex = [
    # third-party and standard-library types in signatures and docstrings: no intersphinx (the
    # build must not need the network), so these cannot resolve
    ("py:.*", r"(torch|np|numpy|nn|h5py|Path|pathlib|typing|collections|dataclasses|argparse|yaml|io|os|"
              r"datetime|enum|abc|matplotlib|PIL|scipy|skimage|gdstk|concurrent|threading|logging|contextlib|"
              r"deepinv|dinv|tifffile)(\..*)?"),
    ("py:.*", r"(Optional|Union|Callable|Sequence|Mapping|Iterable|Iterator|Dict|List|Tuple|Any|Literal|Set|"
              r"Type|Generator|Protocol|TypeVar|NamedTuple|ClassVar|Self|Tensor|ndarray|Module|Parameter|"
              r"Generator|float|int|str|bool|bytes|dict|list|tuple|object|None|complex|callable|array|"
              r"array_like|array-like|optional|sequence|mapping|path|file|generator|tensor|dtype|device)"),
    # private base classes named by show-inheritance (not documented: private)
    ("py:class", r"(.*\.)?_\w+"),
]

# ---- MyST -----------------------------------------------------------------------------------------
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]

# ---- autodoc / napoleon -------------------------------------------------------------------------------
autodoc_default_options = {"member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "none"           # signatures as written; types are named in the docstrings
autodoc_class_signature = "separated"
autodoc_mock_imports = ["deepinv", "bm3d", "mutmut"]
# the code's docstrings are reST prose plus a few numpy-style sections; Google-style parsing would
# read prose such as "The mask phases (rad): …" in attribute docstrings as a type
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_preprocess_types = False

# ---- sphinx-gallery -------------------------------------------------------------------------------
_execute = os.environ.get("PHASEFORGE_DOCS_GALLERY", "1") != "0"
sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "plot_gallery": "True" if _execute else "False",
    "abort_on_example_error": False,     # run every example, then fail the build naming each failure
    "only_warn_on_example_error": False,
    "min_reported_time": 0,             # every example page shows its running time
    "show_memory": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "remove_config_comments": True,
    "capture_repr": ("_repr_html_", "__repr__"),
    "matplotlib_animations": False,
    "reference_url": {"phaseforge": None},
    "write_computation_times": True,
}

# ---- HTML ---------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"phaseforge {version}"
html_static_path = []
html_show_sourcelink = True
