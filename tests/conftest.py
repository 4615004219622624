"""Shared fixtures: dtype, device and seeded generators, so tests state their numerics once.

* ``cdtype`` — complex128 (identities and gradient checks hold to ~1e-12 there);
* ``device`` — CPU (the suite never needs a GPU; set ``PHASEFORGE_TEST_DEVICE=cuda`` to run the
  device-agnostic tests on one);
* ``gen`` — a fresh ``torch.Generator`` seeded with 0 for each test;
* ``rand_field`` — ``rand_field(shape, seed)``: a complex Gaussian field in ``cdtype``.
"""
import os

import pytest
import torch


@pytest.fixture
def cdtype():
    return torch.complex128


@pytest.fixture
def device():
    return torch.device(os.environ.get("PHASEFORGE_TEST_DEVICE", "cpu"))


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


@pytest.fixture
def rand_field(cdtype, device):
    def make(shape, seed=0):
        g = torch.Generator().manual_seed(seed)
        re = torch.randn(shape, generator=g, dtype=torch.float64)
        im = torch.randn(shape, generator=g, dtype=torch.float64)
        return torch.complex(re, im).to(device=device, dtype=cdtype)
    return make


@pytest.fixture(autouse=True)
def _tqdm_lock_of_this_process(monkeypatch):
    """tqdm's default write lock holds a multiprocessing semaphore shared by every process forked
    after it was made, and its monitor thread takes it every 10 s: a forked test process (mutmut
    forks one per mutant) that exits while holding it blocks every later one at the next bar.
    A thread lock of this process and no monitor thread keep each test run independent."""
    import threading
    from tqdm.auto import tqdm
    monkeypatch.setattr(tqdm, "monitor_interval", 0)
    monkeypatch.setattr(tqdm, "_lock", threading.RLock(), raising=False)
