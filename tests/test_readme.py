"""README's commands and the docs' Python examples run as written (they document the API and the
command line; a stale one is a defect).

* every ```python block of README.md and of the Markdown pages under docs/ (user guide, reference,
  benchmarks, development) is executed, in a fresh folder;
* every ``phaseforge …`` line of README's ```bash blocks (the five-minute tour) is run in order
  through :func:`phaseforge.cli.main`, in a fresh folder where ``data/`` is the repository's, and must
  exit 0. (README's ```text blocks are syntax overviews and ``make`` targets, not runnable as such.)
"""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_SKIP_DIRS = {"_build", "_generated", "auto_examples"}
DOC_PAGES = [README] + sorted(p for p in (ROOT / "docs").rglob("*.md") if not _SKIP_DIRS & set(p.relative_to(ROOT / "docs").parts))
BLOCKS = [(page, i, block) for page in DOC_PAGES
          for i, block in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M))]


def _commands(text: str):
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("phaseforge "):
                out.append(line)
    return out


COMMANDS = _commands(README.read_text())


def test_readme_shows_runnable_commands():
    assert COMMANDS, "README's five-minute tour (```bash blocks of phaseforge commands) is gone"
    assert any(b[0] == README for b in BLOCKS), "README has no Python example"


@pytest.mark.parametrize("page,index,block", BLOCKS, ids=[f"{p.relative_to(ROOT)}[{i}]" for p, i, _ in BLOCKS])
def test_python_block_runs(page, index, block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "data/mine.h5" not in block:  # blocks run from the repository root: its data/ (shipped models)
        (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)
    else:  # the dataset examples read a user's file: make a small one
        (tmp_path / "data").mkdir()
        from phaseforge.cli import main
        assert main(["simulate", "--out", "data/mine.h5", "--no-progress", "--set", "data.n=4", "--set",
                     "data.size=16", "--set", "masks.n_masks=2", "--set", "batch_size=2"]) == 0
    exec(compile(block, f"{page.relative_to(ROOT)}[python block {index}]", "exec"), {})


def test_readme_tour_commands_run_as_written(tmp_path, monkeypatch):
    """The tour, command by command (≈ 25 s): each exits 0 and leaves the outputs README names."""
    from phaseforge.cli import main
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)
    for line in COMMANDS:
        assert main(shlex.split(line)[1:]) == 0, line
    for produced in ("out/tour/er/metrics.json", "out/tour/er/reconstructions.png", "out/tour/teacher/design.h5",
                     "out/tour/slm/mask.png.json", "out/tour/slm/mask.png.verify.png"):
        assert (tmp_path / produced).is_file(), f"README says the tour writes {produced}"
