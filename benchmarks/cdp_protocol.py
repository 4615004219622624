"""The standard CDP protocol's noise levels on phaseforge's benchmark images (issue 16).

The 8 held-out benchmark images (``learning.images.benchmark_images``, 128×128, gray in [0, 1])
through ``CDPOperator(method="fft", detector_order="fft")`` with L = 4 uniform random phase
masks (seed 0). For α = 9, 27, 81 it prints the Poisson photon count that matches prDeep's noise
variance (``(255/α)²`` photons per unit intensity, times the mean ``|Ax|²`` per detector
pixel), the detector-order check ratio (``optics.cdp.check_detector_order``) for the data as
stored and after ``fftshift``, and the expected amplitude residual ``E‖√y − |Ax|‖²`` per image
from ``PrDeepNoise.expected_residual`` next to one seeded draw.

    python benchmarks/cdp_protocol.py
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learning.images import benchmark_images  # noqa: E402
from optics.cdp import CDPOperator, check_detector_order  # noqa: E402
from optics.noise import PoissonNoise, PrDeepNoise  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    names, imgs = benchmark_images(128)
    x = torch.from_numpy(imgs)
    theta = 2 * math.pi * torch.rand(4, 128, 128, generator=torch.Generator().manual_seed(0))
    A = CDPOperator(theta, method="fft", detector_order="fft")
    I = A.intensity(x)
    print(f"{len(names)} images {names}; mean |Ax|² per detector pixel {float(I.mean()):.3f}")
    print("alpha  photons/unit  photons/pixel  order ratio (as stored)  order ratio (fftshift)  "
          "E‖√y−|Ax|‖² model  one draw")
    for a in (9, 27, 81):
        k = PoissonNoise.matching_prdeep(a).photons_per_unit
        y = PrDeepNoise(a).sample(I, generator=torch.Generator().manual_seed(1))
        ok = [check_detector_order(y[i], A, warn=False).ratio for i in range(len(names))]
        bad = [check_detector_order(torch.fft.fftshift(y[i], dim=(-2, -1)), A, warn=False).ratio
               for i in range(len(names))]
        model = float(PrDeepNoise(a).expected_residual(I).mean())
        draw = float(((y.sqrt() - I.sqrt()) ** 2).sum(dim=(-3, -2, -1)).mean())
        print(f"{a:5d}  {k:12.1f}  {k * float(I.mean()):13.1f}  {min(ok):10.2f} … {max(ok):.2f}  "
              f"{min(bad):13.2f} … {max(bad):.2f}  {model:18.1f}  {draw:8.1f}")


if __name__ == "__main__":
    main()
