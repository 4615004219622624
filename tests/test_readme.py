"""README's Python examples run as written (they document the API; a stale one is a defect)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "data/mine.h5" in BLOCKS[index]:  # the dataset examples read a user's file: make a small one
        (tmp_path / "data").mkdir()
        from phaseforge.cli import main
        assert main(["simulate", "--out", "data/mine.h5", "--no-progress", "--set", "data.n=4", "--set",
                     "data.size=16", "--set", "masks.n_masks=2", "--set", "batch_size=2"]) == 0
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
