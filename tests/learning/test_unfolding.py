"""Deep-unfolding reconstructor (learning.unfolding): physics steps against the classical solvers
and autograd, the denoiser contract, gradients, sizes, the shipped file format, the training pool."""
import math

import numpy as np
import pytest
import torch

from learning.images import BENCHMARK_IMAGE_NAMES, training_pool
from learning.solvers import error_reduction
from learning.unfolding import (ResidualUNetDenoiser, UnfoldedReconstructor, UnfoldingError,
                                amplitude_residual_rms, load_model, relaxed_projection, save_model,
                                warm_start)


class MaskFFT:
    """The standard protocol's operator, ``A_l x = FFT2(M_l ⊙ x)`` (ortho): ``AᴴA = L·I``."""

    def __init__(self, masks):
        self.masks = masks
        self.n_masks = masks.shape[-3]
        self.in_shape = tuple(masks.shape[-2:])
        self.out_shape = self.in_shape

    def A(self, x):
        return torch.fft.fft2(self.masks * x.unsqueeze(-3), norm="ortho")

    def A_adjoint(self, z):
        return (self.masks.conj() * torch.fft.ifft2(z, norm="ortho")).sum(dim=-3)


def _op(n=16, L=4, seed=0, dtype=torch.float32, theta=None):
    g = torch.Generator().manual_seed(seed)
    th = 2 * math.pi * torch.rand(L, n, n, generator=g, dtype=dtype) if theta is None else theta
    return MaskFFT(torch.polar(torch.ones_like(th), th))


def _objects(b, n, seed=1, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    # smooth non-negative images (sum of a few blobs) so that they look like pictures
    yy, xx = torch.meshgrid(torch.arange(n, dtype=dtype), torch.arange(n, dtype=dtype), indexing="ij")
    out = torch.zeros(b, n, n, dtype=dtype)
    for _ in range(4):
        c = torch.rand(b, 2, generator=g, dtype=dtype) * n
        w = 2 + 3 * torch.rand(b, generator=g, dtype=dtype)
        out += torch.exp(-((yy - c[:, 0, None, None]) ** 2 + (xx - c[:, 1, None, None]) ** 2)
                         / (2 * w[:, None, None] ** 2))
    return 0.1 + 0.8 * out / out.amax(dim=(-2, -1), keepdim=True)


def _y(op, x):
    return op.A(torch.complex(x, torch.zeros_like(x))).abs() ** 2


# ---------------------------------------------------------------------------------------------
# physics pieces
# ---------------------------------------------------------------------------------------------
def test_warm_start_is_error_reduction_with_positivity():
    """The warm start is ER (realness + positivity) from the flat image: identical to
    learning.solvers.error_reduction from the same start, float64, 1e-10 (same arithmetic up to
    summation order)."""
    op = _op(16, 4, dtype=torch.float64)
    x = _objects(2, 16, dtype=torch.float64)
    y = _y(op, x)
    ours = warm_start(op, y, n_iter=7, encoding="amplitude", norm_sq=4.0, in_shape=(16, 16))
    level = torch.sqrt(y.sum(dim=(-3, -2, -1)) / (4.0 * 256))
    x0 = (level[:, None, None] * torch.ones(2, 16, 16, dtype=torch.float64)).to(torch.complex128)
    ref = error_reduction(op, y, n_iter=7, x0=x0, nonnegative=True, tol=None, residual_tol=None,
                          history=False, norm_sq=4.0).x
    assert torch.allclose(ours, ref, atol=1e-10, rtol=0)


def test_relaxed_projection_is_an_amplitude_loss_gradient_step():
    """``x + τAᴴ(√y sgn(Ax) − Ax)/s`` = ``x − (τ/s)∇f`` with ``f = ½‖|Ax| − √y‖²`` (torch's
    complex gradient is ∂f/∂Re + i∂f/∂Im); complex128 autograd, 1e-10."""
    op = _op(8, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.complex(torch.randn(8, 8, generator=g, dtype=torch.float64),
                      torch.randn(8, 8, generator=g, dtype=torch.float64)).requires_grad_(True)
    sy = torch.rand(3, 8, 8, generator=g, dtype=torch.float64) + 0.1
    f = 0.5 * ((op.A(x).abs() - sy) ** 2).sum()
    (grad,) = torch.autograd.grad(f, x)
    step = relaxed_projection(op, x.detach(), sy, tau=0.7, norm_sq=3.0)
    assert torch.allclose(step, x.detach() - 0.7 / 3.0 * grad, atol=1e-10, rtol=0)


def test_noise_estimate_follows_the_amplitude_noise():
    """σ̂ (warm-start amplitude residual) ≈ the amplitude-noise std: with L = 4 real objects
    there are 4n measurements for n unknowns, so ER absorbs about a quarter of the noise power
    (σ̂ ≈ σ√(3/4) ≈ 0.87σ); accepted in [0.6σ, 1.1σ] (32², 2 samples: ~2k residuals each, the
    rms is known to ~2 %; the band covers ER's partial fit); σ̂ ≈ 0 without noise."""
    op = _op(32, 4, seed=5)
    x = _objects(2, 32, seed=6)
    a = op.A(torch.complex(x, torch.zeros_like(x))).abs()
    g = torch.Generator().manual_seed(7)
    for sigma in (0.02, 0.08):
        b = (a + sigma * torch.randn(a.shape, generator=g)).clamp_min(0)
        xw = warm_start(op, b ** 2, n_iter=50, encoding="amplitude", norm_sq=4.0, in_shape=(32, 32))
        s = amplitude_residual_rms(op, xw, b)
        assert bool(((s > 0.6 * sigma) & (s < 1.1 * sigma)).all()), (sigma, s)
    xw = warm_start(op, a ** 2, n_iter=200, encoding="amplitude", norm_sq=4.0, in_shape=(32, 32))
    assert float(amplitude_residual_rms(op, xw, a).max()) < 0.05 * 0.02


# ---------------------------------------------------------------------------------------------
# denoiser
# ---------------------------------------------------------------------------------------------
def test_denoiser_contract_identity_at_init_any_size():
    """D(x, sigma): real (B, C, H, W) in and out; untrained = identity (zero last conv), exactly;
    sizes that are not multiples of 4 work (padding cropped back); one sigma per sample."""
    d = ResidualUNetDenoiser(2, (4, 8, 16))
    x = torch.rand(3, 2, 30, 34)
    assert torch.equal(d(x, 0.1), x)
    assert torch.equal(d(x, torch.tensor([0.1, 0.2, 0.3])), x)
    with pytest.raises(UnfoldingError, match="sigma has 2 values for a batch of 3"):
        d(x, torch.tensor([0.1, 0.2]))
    with pytest.raises(UnfoldingError, match=r"real x of shape \(B, 2, H, W\)"):
        d(x[:, :1], 0.1)


def test_denoiser_uses_sigma_and_is_translation_equivariant():
    """Once trained (here: random last conv), the output depends on sigma, and a circular shift
    by a multiple of 4 (the pooling factor) moves the output with it away from the borders:
    a fully convolutional map (interior 48 px from every border, beyond the receptive field's
    reach of the padding, compared to 1e-5: float32 rounding only)."""
    torch.manual_seed(0)
    d = ResidualUNetDenoiser(1, (4, 8, 16))
    torch.nn.init.normal_(d.net.out.weight, std=0.5)
    x = torch.rand(1, 1, 64, 64)
    assert not torch.allclose(d(x, 0.0), d(x, 0.5))
    big = torch.rand(1, 1, 160, 160)
    a = d(big, 0.1)[..., 56:104, 56:104]
    b = d(big[..., 8:, 8:], 0.1)[..., 48:96, 48:96]
    assert torch.allclose(a, b, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# reconstructor
# ---------------------------------------------------------------------------------------------
def test_untrained_model_is_er_plus_physics_and_solves_noiseless_data():
    """With identity denoisers and τ = 1 the model is ER followed by K realness-only projections:
    on noiseless L = 4 data of a real object it recovers the object (PSNR > 40 dB at 32²), and it
    follows the model(y, physics) contract (ReconOutput with x complex (B, H, W))."""
    op = _op(32, 4, seed=2)
    x = _objects(2, 32, seed=4)
    m = UnfoldedReconstructor(n_stages=3, widths=(4, 8), n_warm=150)
    with torch.no_grad():
        out = m(_y(op, x), op)
    assert out.x.shape == (2, 32, 32) and out.x.is_complex()
    mse = ((out.x.real - x) ** 2).mean(dim=(-2, -1))
    assert float((10 * torch.log10(1 / mse)).min()) > 40


def test_gradients_reach_every_parameter_and_the_masks_not_the_warm_start():
    """Training signal: every network weight, step size and sigma scale gets a finite non-zero
    gradient; so do learnable mask phases (through the stages' A/Aᴴ); the warm start carries no
    graph (x0 has no grad_fn)."""
    torch.manual_seed(0)
    theta = (2 * math.pi * torch.rand(4, 16, 16)).requires_grad_(True)
    x = _objects(2, 16)
    with torch.no_grad():
        y = _y(_op(16, 4, theta=theta.detach()), x) * (1 + 0.05 * torch.randn(2, 4, 16, 16)).clamp_min(0)
    for shared in (True, False):
        m = UnfoldedReconstructor(n_stages=2, widths=(4, 8), n_warm=5, shared=shared)
        for den in m.denoisers:  # leave the identity so gradients reach the inner layers
            torch.nn.init.normal_(den.net.out.weight, std=0.1)
        theta.grad = None
        out = m(y, _op(16, 4, theta=theta))
        assert out.x0.grad_fn is None
        ((out.x.real - x) ** 2).mean().backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        assert theta.grad is not None and theta.grad.abs().sum() > 0


def test_shared_versus_per_stage_weights():
    """shared=True holds one denoiser for all K stages, per-stage K of them (K× the weights)."""
    a = UnfoldedReconstructor(n_stages=4, widths=(4, 8), shared=True)
    b = UnfoldedReconstructor(n_stages=4, widths=(4, 8), shared=False)
    na = sum(p.numel() for p in a.denoisers.parameters())
    nb = sum(p.numel() for p in b.denoisers.parameters())
    assert len(a.denoisers) == 1 and len(b.denoisers) == 4 and nb == 4 * na


@pytest.mark.parametrize("n", [64, 128, 256])
def test_fully_convolutional_sizes(n):
    """A model (trained at any patch size) runs at 64², 128² and 256²: output on the input grid."""
    op = _op(n, 4, seed=n)
    x = _objects(1, n)
    m = UnfoldedReconstructor(n_stages=2, widths=(4, 8, 16), n_warm=3).eval()
    with torch.no_grad():
        out = m(_y(op, x), op)
    assert out.x.shape == (1, n, n) and bool(torch.isfinite(out.x.real).all())


def test_phase_encoding_output_has_unit_modulus():
    """Phase objects: every stage ends on the unit circle (|x| = 1 to 1e-5), rms-normalised y."""
    op = _op(16, 4, seed=3)
    g = torch.Generator().manual_seed(2)
    obj = torch.polar(torch.ones(2, 16, 16), math.pi * torch.rand(2, 16, 16, generator=g))
    y = 37.0 * op.A(obj).abs() ** 2  # an unknown gain (photons)
    m = UnfoldedReconstructor(encoding="phase", n_stages=2, widths=(4, 8), n_warm=10, normalize="rms")
    torch.nn.init.normal_(m.denoisers[0].net.out.weight, std=0.1)
    with torch.no_grad():
        out = m(y, op)
    assert torch.allclose(out.x.abs(), torch.ones(2, 16, 16), atol=1e-5)


def test_bad_inputs_name_the_problem():
    op = _op(16, 4)
    m = UnfoldedReconstructor(n_stages=1, widths=(4, 8))
    with pytest.raises(UnfoldingError, match=r"\(B, L, Mh, Mw\)"):
        m(torch.ones(4, 16, 16), op)
    with pytest.raises(UnfoldingError, match="lacks A"):
        m(torch.ones(1, 4, 16, 16), object())
    with pytest.raises(UnfoldingError, match="encoding"):
        UnfoldedReconstructor(encoding="intensity")


def test_regime_check_refuses_untrained_noise_levels():
    """check=True: a σ̂ outside the trained range (× 1.5) raises, naming σ̂ and the range."""
    op = _op(16, 4)
    x = _objects(1, 16)
    m = UnfoldedReconstructor(n_stages=1, widths=(4, 8), n_warm=20)
    m.sigma_range.copy_(torch.tensor([0.05, 0.2]))
    y = _y(op, x)  # noiseless: σ̂ ≈ 0
    with pytest.raises(UnfoldingError, match=r"noise estimate σ̂ = .* outside the range .*0\.05"):
        m(y, op, check=True)
    m.sigma_range.copy_(torch.tensor([0.0, 0.2]))
    m(y, op, check=True)


def test_save_load_round_trip_weights_only(tmp_path):
    """The shipped format: tensors + plain JSON, read with weights_only=True; same outputs."""
    torch.manual_seed(0)
    m = UnfoldedReconstructor(n_stages=2, widths=(4, 8), n_warm=5, shared=False)
    for den in m.denoisers:
        torch.nn.init.normal_(den.net.out.weight, std=0.1)
    p = save_model(m, tmp_path / "m.pt", {"protocol": {"n_masks": 4}, "psnr": [1.5, 2.0]})
    raw = torch.load(p, weights_only=True)
    assert raw["config"]["n_stages"] == 2
    m2, meta = load_model(p)
    assert meta["psnr"] == [1.5, 2.0] and not m2.training
    op = _op(16, 4)
    y = _y(op, _objects(1, 16))
    with torch.no_grad():
        assert torch.equal(m.eval()(y, op).x, m2(y, op).x)
    with pytest.raises(UnfoldingError, match="plain JSON"):
        save_model(m, tmp_path / "bad.pt", {"t": torch.ones(1)})
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(UnfoldingError, match="not a deep-unfolding model"):
        load_model(tmp_path / "other.pt")
    with pytest.raises(UnfoldingError, match="does not exist"):
        load_model(tmp_path / "none.pt")


# ---------------------------------------------------------------------------------------------
# training pool
# ---------------------------------------------------------------------------------------------
def test_training_pool_excludes_every_benchmark_image():
    """No benchmark image in the pool by name, nor by content: each pool image and each benchmark
    image is reduced to a 32² thumbnail (centre square, block means), and the normalised
    correlation of every pool thumbnail (under the 8 flips/rotations) with every benchmark
    thumbnail stays below 0.95 (the same image gives 1.0 exactly, a crop of it ≥ 0.95 rarely)."""
    from learning.images import _sample_image

    pool = training_pool(split="all")
    assert not set(pool) & set(BENCHMARK_IMAGE_NAMES)
    assert set(training_pool(split="train")).isdisjoint(training_pool(split="val"))

    def thumb(a):
        h, w = a.shape
        s = min(h, w) // 32 * 32
        t, left = (h - s) // 2, (w - s) // 2
        a = a[t:t + s, left:left + s].astype(np.float64).reshape(32, s // 32, 32, s // 32).mean(axis=(1, 3))
        a = a - a.mean()
        return a / max(np.linalg.norm(a), 1e-12)

    bz = [thumb(_sample_image(n)) for n in BENCHMARK_IMAGE_NAMES]
    assert max(float((b * b).sum()) for b in bz) > 0.999  # the measure: an image matches itself
    for name, img in pool.items():
        p = thumb(img)
        for t in range(8):
            q = np.rot90(p, t % 4)
            q = q[:, ::-1] if t >= 4 else q
            assert max(float((q * b).sum()) for b in bz) < 0.95, name


# ---------------------------------------------------------------------------------------------
# as the reconstructor of a teacher / student system
# ---------------------------------------------------------------------------------------------
def test_model_kind_selects_the_reconstructor():
    """model.kind: unfolded (default) → UnfoldedReconstructor (rms-normalised: photon units);
    unet → the unrolled-ER + U-Net Reconstructor; anything else is a config error."""
    from learning.systems import Reconstructor
    from phaseforge.config import ConfigError, load
    from phaseforge.learn import CONFIG_DIR, build_model

    m = build_model(load(CONFIG_DIR / "teacher.yaml", ["data.size=16"]))
    assert isinstance(m.reconstructor, UnfoldedReconstructor) and m.reconstructor.normalize == "rms"
    assert m.reconstructor.encoding == "phase" and m.reconstructor.shared
    m = build_model(load(CONFIG_DIR / "student_e2e.yaml", ["data.size=16", "model.kind=unet"]))
    assert isinstance(m.reconstructor, Reconstructor)
    with pytest.raises(ConfigError, match="model.kind"):
        load(CONFIG_DIR / "teacher.yaml", ["model.kind=transformer"])


def test_unfolded_system_trains_masks_and_network(tmp_path):
    """One training epoch of a coded system (16², 2× oversampled Fraunhofer, 100 photons) with
    the unfolded reconstructor through learning.training.train: finite losses, and both the mask
    phases and the denoiser weights move (gradients reach both through the stages)."""
    from learn_helpers import make_tiny_model
    from learning.losses import ReconstructionLoss
    from learning.systems import PhaseRetrievalModel
    from learning.training import TrainSettings, train

    base = make_tiny_model(n_masks=2, widths=(), size=16)
    rec = UnfoldedReconstructor(encoding="phase", n_stages=2, widths=(4, 8), n_warm=5, normalize="rms")
    model = PhaseRetrievalModel(base.physics, rec)
    g = torch.Generator().manual_seed(0)
    objs = torch.polar(torch.ones(8, 16, 16), math.pi * torch.rand(8, 16, 16, generator=g))
    th0 = model.physics.theta.detach().clone()
    w0 = rec.denoisers[0].net.enc[0][0].weight.detach().clone()
    res = train(model, [ReconstructionLoss()], {}, objs, objs[:2],
                TrainSettings(epochs=1, batch_size=4, progress=False), tmp_path / "run")
    assert all(math.isfinite(r["loss"]) for r in res["history"])
    assert not torch.equal(model.physics.theta.detach(), th0)
    assert not torch.equal(rec.denoisers[0].net.enc[0][0].weight.detach(), w0)


def test_shipped_model_loads_weights_only_and_beats_er_on_its_protocol():
    """data/models/cdp_unfolded_L4.pt: ≤ 2 MB, weights-only, the standard protocol in its metadata,
    and on one held-out-style measurement (a smooth 64² object, L = 4 random phase masks, prDeep
    noise α = 27) it beats the ER iterations it starts from by > 1 dB (here +9.7 dB, most of it the TV
    warm start on this smooth object; +6.1 dB at 128² on the benchmark images) and its learned stages
    do not lose what the TV warm start gained (here +0.04 dB; +0.1 to +0.6 dB on validation images)."""
    from pathlib import Path
    path = Path(__file__).resolve().parents[2] / "data" / "models" / "cdp_unfolded_L4.pt"
    assert path.stat().st_size <= 2_000_000
    model, meta = load_model(path)
    assert meta["protocol"]["n_masks"] == 4 and meta["protocol"]["encoding"] == "amplitude"
    op = _op(64, 4, seed=11)
    x = _objects(2, 64, seed=12)
    a = op.A(torch.complex(x, torch.zeros_like(x))).abs()
    g = torch.Generator().manual_seed(13)
    y = (a * a + (27 / 255) * a * torch.randn(a.shape, generator=g)).clamp_min(0)
    with torch.no_grad():
        out = model(y, op)
    er = warm_start(op, y, n_iter=model.n_warm, norm_sq=4.0, in_shape=(64, 64))  # AᴴA = L·I

    def psnr(e):
        return float((10 * torch.log10(1 / ((e.real.clamp(0, 1) - x) ** 2).mean())).item())
    assert psnr(out.x) > psnr(er) + 1.0
    assert psnr(out.x) > psnr(out.x0) - 0.1


def test_the_learned_denoiser_is_a_plug_and_play_denoiser():
    """The unfolding network's denoiser has the PnP interface: an untrained one is the identity, so
    plug-and-play with it is exactly error reduction with the same iterations (same start)."""
    import math

    from learning.denoisers import Denoiser
    from learning.solvers import solve
    from learning.unfolding import ResidualUNetDenoiser
    from optics.cdp import CDPOperator
    g = torch.Generator().manual_seed(0)
    theta = 2 * math.pi * torch.rand(2, 16, 16, generator=g)
    op = CDPOperator(torch.polar(torch.ones_like(theta), theta), method="fft")
    x = torch.rand(1, 16, 16, generator=g).to(torch.complex64)
    y = op.intensity(x)
    den = ResidualUNetDenoiser(1, (8, 16))
    assert isinstance(den, Denoiser) and den.differentiable
    x0 = solve(op, y, "er", real=True, nonnegative=True, n_iter=5, generator=0, history=False).x
    p = solve(op, y, "pnp", denoiser=den, x0=x0, nonnegative=True, amplitude_noise_std=0.01, n_iter=6, history=False)
    e = solve(op, y, "er", x0=x0, real=True, nonnegative=True, n_iter=6, tol=None, residual_tol=None, history=False)
    torch.testing.assert_close(p.x, e.x, atol=1e-6, rtol=1e-5)


def test_tv_warm_start_is_the_tv_solvers_loop_and_a_noise_input_model_needs_the_noise_level():
    """``n_warm_tv``: after the ER warm start, the iterations of :func:`learning.solvers.tv` from
    the same start give the same iterate (to float32 rounding, 1e-5); a ``noise_input`` model
    refuses to run without ``noise_std`` and uses the given σ_b (per sample) for the TV weight."""
    import math

    from learning.solvers import solve
    from learning.unfolding import UnfoldingError, tv_warm_start, warm_start
    from optics.cdp import CDPOperator
    g = torch.Generator().manual_seed(0)
    theta = 2 * math.pi * torch.floor(4 * torch.rand(1, 32, 32, generator=g)) / 4  # L = 1, 4 levels
    op = CDPOperator(torch.polar(torch.ones_like(theta), theta), method="fft")
    x = torch.rand(2, 32, 32, generator=g)
    a = op.A(x.to(torch.complex64)).abs()
    y = (a * a + (27 / 255) * a * torch.randn(a.shape, generator=g)).clamp_min(0)
    x0 = warm_start(op, y, n_iter=20, norm_sq=1.0, in_shape=(32, 32))
    sb = torch.tensor([0.03, 0.05])
    t = tv_warm_start(op, y, x0, n_iter=6, weight_factor=2.0, sigma_x=sb / math.sqrt(2.0), norm_sq=1.0)
    for i in range(2):
        r = solve(op, y[i:i + 1], "tv", x0=x0[i:i + 1], n_iter=6, weight_factor=2.0,
                  amplitude_noise_std=float(sb[i]), real=True, nonnegative=True, tol=None, residual_tol=None,
                  history=False).x
        torch.testing.assert_close(t[i:i + 1], r, atol=1e-5, rtol=0)
    m = UnfoldedReconstructor(n_stages=2, shared=True, widths=[], n_warm=20, n_warm_tv=6, tv_weight_factor=2.0,
                              noise_input=True)
    torch.testing.assert_close(m(y, op, noise_std=sb).x0, t, atol=1e-5, rtol=0)
    # a tiny initial step: the untrained model (identity denoisers) returns the TV result itself
    m0 = UnfoldedReconstructor(n_stages=3, shared=True, widths=[4, 8], n_warm=20, n_warm_tv=6, tv_weight_factor=2.0,
                               noise_input=True, tau_init=1e-6)
    o = m0(y, op, noise_std=sb)
    torch.testing.assert_close(o.x, t, atol=1e-5, rtol=0)
    with pytest.raises(UnfoldingError, match="noise_std"):
        m(y, op)
    with pytest.raises(UnfoldingError, match="one per sample"):
        m(y, op, noise_std=torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(UnfoldingError, match="amplitude"):
        UnfoldedReconstructor(encoding="phase", n_warm_tv=3)


def test_shipped_single_snapshot_model_needs_the_noise_level_and_beats_er_on_one_4_level_mask():
    """data/models/cdp_unfolded_L1_4level.pt: ≤ 2 MB, weights-only, L = 1 on 4-level masks in its
    metadata; it takes the known noise level (refuses without it) and on one 64² measurement
    (smooth object, one 4-level random mask, prDeep α = 27) it is > 5 dB above the 50 ER iterations
    it starts from (ER stagnates on one snapshot: 11–12 dB on the benchmark; the model 29.8 dB)."""
    from pathlib import Path

    from learning.unfolding import UnfoldingError
    path = Path(__file__).resolve().parents[2] / "data" / "models" / "cdp_unfolded_L1_4level.pt"
    assert path.stat().st_size <= 2_000_000
    model, meta = load_model(path)
    assert meta["protocol"]["n_masks"] == 1 and meta["protocol"]["mask_levels"] == 4
    assert model.noise_input and model.n_warm_tv > 0
    g = torch.Generator().manual_seed(21)
    theta = 2 * math.pi * torch.floor(4 * torch.rand(1, 64, 64, generator=g)) / 4
    from optics.cdp import CDPOperator
    op = CDPOperator(torch.polar(torch.ones_like(theta), theta), method="fft", detector_order="fft")
    x = _objects(1, 64, seed=22)
    a = op.A(torch.complex(x, torch.zeros_like(x))).abs()
    y = (a * a + (27 / 255) * a * torch.randn(a.shape, generator=g)).clamp_min(0)
    with pytest.raises(UnfoldingError, match="noise_std"):
        model(y, op)
    er = warm_start(op, y, n_iter=50, norm_sq=1.0, in_shape=(64, 64))
    with torch.no_grad():
        out = model(y, op, noise_std=27 / 255 / 2)  # prDeep's amplitude noise std to first order: α/(2·255)

    def psnr(e):
        return float((10 * torch.log10(1 / ((e.real.clamp(0, 1) - x) ** 2).mean())).item())
    assert psnr(out.x) > psnr(er) + 5.0
