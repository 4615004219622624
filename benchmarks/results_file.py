"""Results files of the timing benchmarks (``--json PATH`` of propagation, simulate, training, export).

A benchmark prints its tables as markdown; :class:`Recorder` copies what it prints and, on exit,
writes the tables as ``{"benchmark", "command", "provenance", "machine", "tables": [{"title",
"columns", "rows"}]}`` — the schema the docs render (``docs/_ext/pf_bench.py``: commit it as
``benchmarks/results/<name>/<name>.json`` and the benchmark page shows it). A table's title is the
last non-empty line printed before it.
"""
from __future__ import annotations

import datetime as _dt
import io
import json
import os
import re
import shlex
import sys
from pathlib import Path

__all__ = ["tables_from_markdown", "Recorder"]


def _cells(line: str) -> list:
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def tables_from_markdown(text: str) -> list:
    """Every markdown table in ``text`` (header, ``---`` rule, rows) with the line before it as title."""
    tables, lines, i, title = [], text.splitlines(), 0, ""
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|(\s*:?-+:?\s*\|)+", lines[i + 1].strip()):
            cols, rows, i = _cells(s), [], i + 2
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            tables.append({"title": title, "columns": cols, "rows": rows})
            continue
        if s:
            title = s
        i += 1
    return tables


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()


class Recorder:
    """``with Recorder(path, "propagation", argv):`` — print as usual; with ``path`` set, the printed
    tables are written there (atomically) when the block ends without an exception."""

    def __init__(self, path, benchmark: str, argv=None):
        self.path = None if path is None else Path(path)
        self.benchmark = benchmark
        args = sys.argv[1:] if argv is None else list(argv)
        self.command = " ".join(["python", f"benchmarks/{benchmark}.py", *map(shlex.quote, args)])
        self.buf = io.StringIO()

    def __enter__(self):
        if self.path is not None:
            self._stdout = sys.stdout
            sys.stdout = _Tee(self._stdout, self.buf)
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.path is None:
            return False
        sys.stdout = self._stdout
        if exc_type is not None:
            return False
        import torch
        now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
        doc = {"benchmark": self.benchmark, "command": self.command, "provenance": f"measured {now}",
               "machine": f"{os.cpu_count()} CPUs, load average {load}, torch {torch.__version__}, "
                          f"{torch.get_num_threads()} threads",
               "tables": tables_from_markdown(self.buf.getvalue())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(self.path)
        print(f"results file: {self.path}")
        return False
