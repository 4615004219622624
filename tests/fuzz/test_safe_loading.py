"""Loading a file cannot run code: no pickle anywhere in the code base (issue 20).

A source scan, so that the rule survives new readers: checkpoints are read with
``torch.load(weights_only=True)``, numpy files with ``allow_pickle=False``, YAML with
``yaml.safe_load``, and nothing calls :mod:`pickle`, :mod:`marshal`, :mod:`shelve` or
``yaml.load``/``unsafe_load``/``full_load``. Behaviour tests of the refusals live next to
each reader (``tests/learning/test_training.py``: a checkpoint holding a pickled object).
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if ROOT.name == "mutants":  # `make mutate` runs the suite in mutmut's copy, whose mutants include unsafe loads
    pytest.skip("the source scan reads the real sources, not mutmut's mutated copy", allow_module_level=True)
PACKAGES = ("optics", "learning", "fabrication", "calibration", "phaseforge", "benchmarks")

FORBIDDEN = [
    (re.compile(r"weights_only\s*=\s*False"), "torch.load(weights_only=False) unpickles objects"),
    (re.compile(r"allow_pickle\s*=\s*True"), "np.load(allow_pickle=True) unpickles objects"),
    (re.compile(r"\b(c?pickle|marshal|shelve|dill|joblib)\.(load|loads|Unpickler|open)\b"), "unpickling"),
    (re.compile(r"\byaml\.(load|unsafe_load|full_load|load_all|unsafe_load_all)\("), "YAML that builds objects"),
    (re.compile(r"\bnp\.load\((?![^)]*allow_pickle=False)"), "np.load without allow_pickle=False"),
]


def _sources():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_no_loader_that_can_run_code():
    hits = []
    for f in _sources():
        for i, line in enumerate(f.read_text().splitlines(), 1):
            for rx, why in FORBIDDEN:
                if rx.search(line):
                    hits.append(f"{f.relative_to(ROOT)}:{i}: {why}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_every_torch_load_is_weights_only():
    """Every ``torch.load(`` call in the packages passes ``weights_only=True`` (within the call)."""
    bad = []
    for f in _sources():
        text = f.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.end():m.end() + 300].split(")\n")[0]
            if "weights_only=True" not in call:
                bad.append(f"{f.relative_to(ROOT)}:{text[:m.start()].count(chr(10)) + 1}")
    assert not bad, f"torch.load without weights_only=True at {bad}"


def test_scan_sees_what_it_forbids(tmp_path):
    """The patterns match the unsafe calls (a scan that matches nothing proves nothing)."""
    samples = ["torch.load(p, weights_only=False)", "np.load(p, allow_pickle=True)", "pickle.loads(b)",
               "yaml.load(text, Loader=yaml.Loader)", "np.load(p)"]
    for s in samples:
        assert any(rx.search(s) for rx, _ in FORBIDDEN), s
    for s in ["np.load(p, allow_pickle=False)", "yaml.safe_load(t)", "torch.load(p, weights_only=True)"]:
        assert not any(rx.search(s) for rx, _ in FORBIDDEN), s
