"""``with single_thread():`` — run small-tensor torch work on one intra-op thread.

The calibration fits work on tensors of a few thousand to a few hundred thousand elements;
on a shared or busy machine extra intra-op threads cost far more in synchronisation than they
gain (measured 20–25× slower with 2 threads on 2 busy cores). The previous setting is restored.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
