"""The allocator tuning is applied once, can be switched off, and never breaks the process."""
import subprocess
import sys


def _run(env_value):
    code = ("import os\nfrom phaseforge.alloc import tune_allocator\n"
            "a = tune_allocator(); b = tune_allocator(); import torch\n"
            "x = torch.randn(1 << 22); y = (x * 2).sum()  # allocations still work\n"
            "print(a, b)")
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["PHASEFORGE_MALLOC_TUNING"] = env_value
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout


def test_tuning_is_idempotent_and_can_be_disabled():
    on = _run(None).split()
    assert on[0] == on[1]  # same answer twice (applied once)
    if sys.platform.startswith("linux"):
        assert on[0] == "True"
    assert _run("0").split() == ["False", "False"]
