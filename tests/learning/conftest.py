import sys
from pathlib import Path

import pytest
import torch

# the helpers module must be importable by name (also from spawned data-parallel workers), which
# --import-mode=importlib does not arrange for test folders
sys.path.insert(0, str(Path(__file__).resolve().parent))
from learn_helpers import make_tiny_model  # noqa: E402


@pytest.fixture
def tiny_model():
    """Factory of small PhaseRetrievalModels (:func:`make_tiny_model`)."""
    return make_tiny_model


@pytest.fixture(scope="session")
def phase_objects():
    """48 phase objects (16×16) from the embedded train split and 16 from val."""
    from learning.encoding import ObjectSet
    from learning.images import open_image_source

    def objs(split, n):
        o = ObjectSet(open_image_source("embedded", 16, split=split, n=n), encoding="phase")
        return torch.stack([o[i] for i in range(n)])

    return objs("train", 48), objs("val", 16)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spinning on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
