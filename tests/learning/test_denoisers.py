"""Tests of learning.denoisers: the D(x, sigma) interface and the classical denoisers.

Tolerances: the TV denoiser is checked as the proximal map of λ·TV — its output must have an
objective no larger than that of any nearby point (slack 1e-7 relative: Chambolle's algorithm run
to eps = 1e-7) and must keep the mean exactly (TV ignores constants; float64 round-off, 1e-10).
The denoising margins (≥ 4 dB over the noisy input at σ = 0.1 on a smooth 32×32 image) are far
below what the denoisers reach there (measured 9–13 dB), so the tests flag breakage, not tuning.
"""
import math

import pytest
import torch

from learning.denoisers import (DENOISERS, Denoiser, DenoiserError, NLMDenoiser, TVDenoiser,
                                WaveletDenoiser, make_denoiser)
from learning.metrics import psnr


def _smooth(n=32, seed=0):
    i = torch.arange(n, dtype=torch.float64)
    img = 0.5 + 0.3 * torch.sin(2 * math.pi * i[:, None] / n) * torch.cos(2 * math.pi * i[None, :] / n)
    img[n // 4: n // 2, n // 4: 3 * n // 4] += 0.2  # an edge
    return img


def _tv(u):
    dx = torch.diff(u, dim=-1, append=u[..., -1:])
    dy = torch.diff(u, dim=-2, append=u[..., -1:, :])
    return torch.sqrt(dx * dx + dy * dy).sum()


def test_tv_denoiser_is_the_prox_of_lambda_tv():
    g = torch.Generator().manual_seed(1)
    f = _smooth() + 0.1 * torch.randn(32, 32, generator=g, dtype=torch.float64)
    lam = 0.08
    u = TVDenoiser(weight=lam, eps=1e-7, max_num_iter=5000)(f[None, None], 0.0)[0, 0]

    def obj(v):
        return 0.5 * ((v - f) ** 2).sum() + lam * _tv(v)

    o = obj(u)
    assert o < obj(f) and o < obj(torch.full_like(f, float(f.mean())))
    for k in range(20):
        d = torch.randn(32, 32, generator=g, dtype=torch.float64)
        for eps in (1e-2, 1e-3):
            assert o <= obj(u + eps * d / d.norm()) * (1 + 1e-7), (k, eps)
    # TV does not see constants: the prox keeps the mean
    assert abs(float(u.mean() - f.mean())) < 1e-10


def test_tv_weight_follows_sigma():
    """λ = weight_factor·σ: σ = 0.05 with factor 2 equals a fixed weight 0.1."""
    x = (_smooth() + 0.05 * torch.randn(32, 32, generator=torch.Generator().manual_seed(2),
                                         dtype=torch.float64))[None, None]
    a = TVDenoiser(weight_factor=2.0)(x, 0.05)
    b = TVDenoiser(weight=0.1)(x, 0.05)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ["nlm", "wavelet", "tv"])
def test_classical_denoisers_reduce_noise(name):
    clean = _smooth().float()
    g = torch.Generator().manual_seed(3)
    sigma = 0.1
    noisy = clean + sigma * torch.randn(2, 1, 32, 32, generator=g)
    den = make_denoiser(name)
    out = den(noisy, sigma)
    assert out.shape == noisy.shape and out.dtype == noisy.dtype
    gain = psnr(out[:, 0], clean, data_range=1.0) - psnr(noisy[:, 0], clean, data_range=1.0)
    assert float(gain.min()) > 4.0, gain


def test_per_sample_sigma_and_zero_sigma_is_identity():
    x = (_smooth().float() + 0.1 * torch.randn(2, 2, 32, 32, generator=torch.Generator().manual_seed(4)))
    for den in (NLMDenoiser(), WaveletDenoiser(), TVDenoiser()):
        out = den(x, torch.tensor([0.0, 0.1]))
        assert torch.equal(out[0], x[0]), type(den).__name__
        assert not torch.allclose(out[1], x[1]), type(den).__name__
        # channels are denoised independently: channel 1 alone gives the same result
        alone = den(x[1:, 1:], 0.1)
        assert torch.allclose(alone[0, 0], out[1, 1], atol=1e-6), type(den).__name__


def test_sigma_map_and_subclassing():
    class Shrink(Denoiser):
        differentiable = True

        def forward(self, x, sigma):
            return x / (1 + self.sigma_map(x, sigma))

    x = torch.ones(3, 2, 4, 5)
    m = Denoiser.sigma_map(x, torch.tensor([0.0, 1.0, 3.0]))
    assert m.shape == (3, 1, 4, 5) and float(m[2, 0, 1, 1]) == 3.0
    assert torch.allclose(Shrink()(x, 1.0), torch.full_like(x, 0.5))


def test_bad_input_raises_denoiser_error():
    den = TVDenoiser()
    with pytest.raises(DenoiserError, match="view_as_real"):
        den(torch.ones(1, 1, 8, 8, dtype=torch.complex64), 0.1)
    with pytest.raises(DenoiserError, match=r"\(B, C, H, W\)"):
        den(torch.ones(8, 8), 0.1)
    with pytest.raises(DenoiserError, match="one value per"):
        den(torch.ones(2, 1, 8, 8), torch.ones(3))
    with pytest.raises(DenoiserError, match="≥ 0"):
        den(torch.ones(1, 1, 8, 8), -1.0)
    with pytest.raises(DenoiserError, match="NaN"):
        den(torch.full((1, 1, 8, 8), float("nan")), 0.1)
    with pytest.raises(DenoiserError, match="unknown denoiser"):
        make_denoiser("bilateral")
    with pytest.raises(DenoiserError, match="bad options"):
        make_denoiser("nlm", radius=3)
    with pytest.raises(DenoiserError, match="unknown wavelet"):
        WaveletDenoiser(wavelet="haar2")
    x = torch.ones(1, 1, 8, 8, requires_grad=True)
    with pytest.raises(DenoiserError, match="cannot be differentiated"):
        NLMDenoiser()(x, 0.1)
    assert set(DENOISERS) == {"nlm", "wavelet", "tv", "bm3d"}


def test_bm3d_missing_names_the_extra():
    try:
        import bm3d  # noqa: F401
    except ImportError:
        with pytest.raises(DenoiserError, match=r"pip install \.\[bm3d\]"):
            make_denoiser("bm3d")
    else:  # installed: it must denoise like the others
        clean = _smooth().float()
        noisy = clean + 0.1 * torch.randn(1, 1, 32, 32, generator=torch.Generator().manual_seed(5))
        out = make_denoiser("bm3d")(noisy, 0.1)
        assert float(psnr(out[0, 0], clean, data_range=1.0) - psnr(noisy[0, 0], clean, data_range=1.0)) > 4
