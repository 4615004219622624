"""``--json`` of the timing benchmarks: the printed markdown tables become the results file the docs
render (benchmarks/results_file.py → docs/_ext/pf_bench.py)."""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

from benchmarks.results_file import Recorder, tables_from_markdown  # noqa: E402

PRINTED = """allocator tuning: on
propagators, batch 4
| N | method | ratio |
|---|---|---|
| 256 | fraunhofer | 1.49 |
| 256 | a \\| b | 1.07 |

writer memory
| N | MB |
|---:|---:|
| 1000 | 770 |
peak RSS 412 MiB
"""


def test_tables_are_parsed_with_the_line_before_each_as_title():
    t = tables_from_markdown(PRINTED)
    assert [x["title"] for x in t] == ["propagators, batch 4", "writer memory"]
    assert t[0]["columns"] == ["N", "method", "ratio"]
    assert t[0]["rows"] == [["256", "fraunhofer", "1.49"], ["256", "a | b", "1.07"]]  # escaped pipe kept as text
    assert t[1]["rows"] == [["1000", "770"]]


def test_recorder_writes_what_was_printed_and_the_docs_render_it(tmp_path, capsys):
    out = tmp_path / "results" / "demo" / "demo.json"
    with Recorder(out, "demo", ["--repeats", "3"]):
        print(PRINTED)
    assert "| 256 | fraunhofer | 1.49 |" in capsys.readouterr().out  # still printed
    d = json.loads(out.read_text())
    assert d["command"] == "python benchmarks/demo.py --repeats 3"
    assert d["provenance"].startswith("measured ") and len(d["tables"]) == 2
    import pf_bench
    page = pf_bench.Page("demo", tmp_path / "gen")
    pf_bench._transcribed(page, out)
    md = page.write().read_text()
    assert "| 256 | fraunhofer | 1.49 |" in md and "python benchmarks/demo.py --repeats 3" in md


def test_recorder_without_a_path_writes_nothing(tmp_path):
    with Recorder(None, "demo", []):
        print(PRINTED)
    assert list(tmp_path.iterdir()) == []
