"""Recovery networks: a U-Net of configurable depth and widths that returns its features.

:class:`UNet` maps a ``(B, C_in, H, W)`` real tensor to ``(B, C_out, H, W)`` and also returns
the output of every **decoder level** (the feature maps a feature-distillation loss compares).

Levels are numbered by resolution: decoder level ``k`` lives at ``H/2^k`` with ``widths[k]``
channels, ``0`` the finest (full resolution, the last decoder block) to ``D-1`` the coarsest
(the bottleneck), for ``D = len(widths)``. Level ``k`` of two U-Nets on the same image size has
the same spatial size whatever their widths and depths (a distillation loss bridges different
widths with 1×1 adapters).

Normalisation (``norm``): ``"batch"`` (BatchNorm2d, the usual choice; running statistics are
buffers, so a frozen teacher must be in eval mode), ``"group"`` (GroupNorm, batch-independent:
identical results whatever the per-process batch under data-parallel training) or ``"none"``.

:func:`field_to_channels` / :class:`OutputHead` convert between complex images and channels for
the three object encodings of :mod:`learning.encoding` (amplitude, phase, complex).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from .encoding import ENCODINGS
from .errors import LearningError

__all__ = ["NORMS", "UNet", "OutputHead", "field_to_channels", "NetworkError"]

NORMS = ("batch", "group", "none")


class NetworkError(LearningError):
    """A network configuration that cannot work (widths, depth vs image size, levels)."""


def _norm(kind: str, ch: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(ch)
    if kind == "group":
        g = 8 if ch % 8 == 0 else (4 if ch % 4 == 0 else 1)
        return nn.GroupNorm(g, ch)
    return nn.Identity()


class _Block(nn.Sequential):
    """Two 3×3 conv → norm → ReLU (bias only without a norm)."""

    def __init__(self, cin: int, cout: int, norm: str):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=bias), _norm(norm, cout), nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net (Ronneberger et al., MICCAI 2015) with ``len(widths)`` resolution levels.

    ``widths = (16, 32, 64)``: encoder blocks of 16, 32 and 64 channels (the last one is the
    bottleneck), 2×2 max-pooling between them, bilinear upsampling + skip concatenation in the
    decoder, a 1×1 output convolution initialised to zero (so a residual head starts at its
    input). ``forward(x)`` returns ``(out, features)`` with ``features[k]`` the decoder level
    ``k`` at ``H/2^k`` (module docstring).
    """

    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int] = (16, 32, 64),
                 norm: str = "batch"):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 1 or min(widths) < 1:
            raise NetworkError(f"widths must be a non-empty list of positive channel counts, got {widths!r}")
        if norm not in NORMS:
            raise NetworkError(f"norm = {norm!r} is not one of {NORMS}")
        self.widths = widths
        self.norm = norm
        self.depth = len(widths)
        self.enc = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.enc.append(_Block(cin, w, norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec = nn.ModuleList()
        for k in range(self.depth - 2, -1, -1):
            self.dec.append(_Block(widths[k + 1] + widths[k], widths[k], norm))
        self.out = nn.Conv2d(widths[0], out_channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def feature_channels(self) -> List[int]:
        """Channels of decoder level 0 (finest) … ``depth-1`` (coarsest)."""
        return list(self.widths)

    def check_size(self, h: int, w: int) -> None:
        f = 2 ** (self.depth - 1)
        if h % f or w % f:
            raise NetworkError(
                f"a U-Net with {self.depth} levels needs image sides divisible by 2^{self.depth - 1} = {f}, "
                f"got {h}×{w}; change data.size or use fewer model widths")

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        self.check_size(x.shape[-2], x.shape[-1])
        skips = []
        h = x
        for i, block in enumerate(self.enc):
            h = block(h)
            if i < self.depth - 1:
                skips.append(h)
                h = self.pool(h)
        feats = [h]
        for block in self.dec:
            h = block(torch.cat([self.up(h), skips.pop()], dim=1))
            feats.append(h)
        return self.out(h), feats[::-1]


def field_to_channels(x: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, H, W)`` → real ``(B, 3, H, W)``: real part, imaginary part, modulus."""
    return torch.stack([x.real, x.imag, x.abs()], dim=1)


class OutputHead(nn.Module):
    """Turns the U-Net output into the object, as a residual on the first estimate ``x0``.

    * ``"amplitude"``: ``x = Re x0 + δ₀`` (real; the network's 1 channel);
    * ``"phase"``: ``z = x0 + (δ₀ + iδ₁)``, ``x = z/|z|`` (unit modulus by construction);
    * ``"complex"``: ``x = x0 + (δ₀ + iδ₁)``.
    """

    def __init__(self, encoding: str):
        super().__init__()
        if encoding not in ENCODINGS:
            raise NetworkError(f"encoding = {encoding!r} is not one of {ENCODINGS}")
        self.encoding = encoding
        self.channels = 1 if encoding == "amplitude" else 2

    def forward(self, delta: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if self.encoding == "amplitude":
            re = x0.real + delta[:, 0]
            return torch.complex(re, torch.zeros_like(re))
        z = x0 + torch.complex(delta[:, 0], delta[:, 1])
        if self.encoding == "phase":
            mag = z.abs().clamp_min(1e-6)
            return z / mag
        return z
