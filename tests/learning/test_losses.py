"""Distillation and reconstruction losses: zero at equality, gradients, the inner-product Gram
identity, the documented Gram degeneracy and the non-degenerate spectrum transfer."""
import math

import pytest
import torch

from learning.losses import (DistillationLoss, LossError, feature_loss, gram_mask_loss,
                             gram_mask_loss_explicit, radial_power_profile, recon_error,
                             spectrum_mask_loss)

pytestmark = pytest.mark.usefixtures("one_thread")


def _phases(L, h, w, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return 2 * math.pi * torch.rand(L, h, w, generator=g, dtype=dtype)


def _masks(theta):
    return torch.polar(torch.ones_like(theta), theta)


def test_gram_inner_products_equal_explicit_matrix():
    # arbitrary complex (not unit-modulus) masks, L = 3 teacher, K = 2 student, 6×5 pixels
    g = torch.Generator().manual_seed(1)
    p = torch.randn(3, 6, 5, generator=g, dtype=torch.complex128)
    q = torch.randn(2, 6, 5, generator=g, dtype=torch.complex128)
    a, b = gram_mask_loss(p, q), gram_mask_loss_explicit(p, q)
    assert torch.allclose(a, b, rtol=1e-12, atol=0), (a, b)  # float64 round-off only


def test_losses_zero_when_student_equals_teacher():
    th = _phases(4, 8, 8, 0)
    m = _masks(th)
    assert float(gram_mask_loss(m, m.clone())) == pytest.approx(0.0, abs=1e-12)
    assert float(spectrum_mask_loss(m, m.clone())) == pytest.approx(0.0, abs=1e-14)
    # the spectrum loss ignores order and translation of the masks
    moved = torch.roll(m.flip(0), shifts=(3, -2), dims=(-2, -1))
    assert float(spectrum_mask_loss(m, moved)) == pytest.approx(0.0, abs=1e-14)
    f = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    for kind in ("mse", "l1", "cosine"):
        assert float(feature_loss(f, f.clone(), kind)) == pytest.approx(0.0, abs=1e-12)
    x = torch.polar(torch.ones(3, 8, 8, dtype=torch.float64), _phases(3, 8, 8, 2))
    # reconstruction loss is invariant to a global phase
    assert float(recon_error(x * torch.exp(torch.tensor(1.234j)), x)) == pytest.approx(0.0, abs=1e-12)
    assert float(recon_error(x * torch.exp(torch.tensor(1.234j)), x, "l1")) < 1e-5


def test_radial_profile_is_a_distribution_and_flat_for_random_masks():
    p = radial_power_profile(_masks(_phases(2, 16, 16, 3)))
    assert torch.allclose(p.sum(-1), torch.ones(2, dtype=torch.float64))
    # a constant mask puts all power at DC
    c = radial_power_profile(torch.ones(1, 16, 16, dtype=torch.complex128))
    assert float(c[0, 0]) == pytest.approx(1.0)


def test_gradcheck_mask_losses_and_features():
    tt = _phases(2, 4, 4, 4)
    ts = _phases(1, 4, 4, 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: gram_mask_loss(_masks(tt), _masks(t)), (ts,))
    assert torch.autograd.gradcheck(lambda t: spectrum_mask_loss(_masks(tt), _masks(t)), (ts,))
    fs = torch.randn(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    ft = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    for kind in ("mse", "cosine"):
        assert torch.autograd.gradcheck(lambda f, k=kind: feature_loss(f, ft, k), (fs,))
    xh = torch.randn(1, 3, 3, dtype=torch.complex128, requires_grad=True)
    x = torch.randn(1, 3, 3, dtype=torch.complex128)
    assert torch.autograd.gradcheck(lambda z: recon_error(z, x), (xh,))


def test_gram_loss_degenerates_for_unit_modulus_masks():
    """Documented trap: loss = const − (2/n²) Σ_l |⟨φ_l, ψ⟩|²; a random student starts within
    O(L/n) of the maximum, and the minimiser copies a teacher mask."""
    h = w = 16
    n = h * w
    teacher = _masks(_phases(4, h, w, 10))
    vals, overlaps = [], []
    for s in range(5):
        psi = _masks(_phases(1, h, w, 100 + s))
        vals.append(float(gram_mask_loss(teacher, psi)))
        overlaps.append(float((teacher.reshape(4, -1) @ psi.reshape(-1).conj()).abs().pow(2).sum()) / n ** 2)
    const = [v + 2 * o for v, o in zip(vals, overlaps)]
    assert max(const) - min(const) < 1e-9 * max(const)  # only the overlap term depends on ψ
    c = const[0]
    copy = float(gram_mask_loss(teacher, teacher[:1]))
    depth = c - copy  # how far the loss can go down (copying one teacher mask)
    assert depth > 1.9
    for v in vals:  # random starts sit within 5 % of the top of that range (≈ L/n = 1.6 %)
        assert (c - v) / depth < 0.05


def test_spectrum_loss_transfers_without_copying():
    """Non-degenerate variant: a random student moves towards the teacher's power spectrum
    (here low-pass masks) without copying any teacher mask."""
    h = w = 16
    g = torch.Generator().manual_seed(7)
    smooth = torch.nn.functional.avg_pool2d(
        6 * math.pi * torch.rand(4, 1, h + 3, w + 3, generator=g, dtype=torch.float64), 4, stride=1)[:, 0]
    teacher = _masks(smooth)
    theta = _phases(1, h, w, 8).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=0.05)
    first = float(spectrum_mask_loss(teacher, _masks(theta.detach())))
    g0 = torch.autograd.grad(spectrum_mask_loss(teacher, _masks(theta)), theta)[0].norm()
    assert first > 0.3 and float(g0) > 1e-2
    for _ in range(150):
        opt.zero_grad()
        spectrum_mask_loss(teacher, _masks(theta)).backward()
        opt.step()
    last = float(spectrum_mask_loss(teacher, _masks(theta.detach())))
    assert last < 0.2 * first, (first, last)
    ov = (teacher.reshape(4, -1) @ _masks(theta.detach()).reshape(-1).conj()).abs() / (h * w)
    assert float(ov.max()) < 0.5  # matched the statistics, not a copy of a teacher mask


def test_distillation_loss_checks_levels_and_freezes_teacher(tiny_model):
    teacher = tiny_model(n_masks=2, widths=(4, 8), role="teacher")
    student = tiny_model(n_masks=1, widths=(2, 4), role="student")
    with pytest.raises(LossError, match="decoder level 2"):
        DistillationLoss(teacher, student, feature_levels=[2])
    d = DistillationLoss(teacher, student, feature_levels=[0, 1])
    assert all(not p.requires_grad for p in teacher.parameters())
    d.train()
    assert not teacher.training
    assert not any(k.startswith("teacher.") or "_teacher" in k for k in d.state_dict())
    # 1×1 adapters bridge the widths (2 → 4, 4 → 8)
    assert d.adapters["0"].in_channels == 2 and d.adapters["0"].out_channels == 4


def test_spectrum_term_compares_on_the_slm_pixel_grid(tiny_model):
    """A random student and a random (untrained) teacher have nothing to transfer: compared on the
    SLM-pixel grid the spectrum term is small, whereas on the simulation grid the student's 2×2
    pixels make the teacher's flat spectrum unreachable."""
    teacher = tiny_model(n_masks=4, widths=(4, 8), role="teacher")
    student = tiny_model(n_masks=1, widths=(2, 4), role="student", slm_upsample=2)
    d = DistillationLoss(teacher, student, mask_kind="spectrum", feature_levels=[])
    on_pixels = float(d.mask_term(student.physics).detach())
    th = student.physics.mask_phase().detach()
    on_sim = float(spectrum_mask_loss(d.teacher_masks, torch.polar(torch.ones_like(th), th)))
    assert on_pixels < 0.2 < on_sim, (on_pixels, on_sim)


@pytest.mark.parametrize("kind", ["spectrum", "gram"])
def test_distillation_mask_entry_is_the_positive_mask_term(tiny_model, kind):
    """The value handed to training, not a comparison: DistillationLoss(...)["mask"] equals
    mask_term(physics), which equals the loss function on the documented grids computed here
    independently, and is > 0 for an untrained student (a distance; a sign flip would make
    training maximise it). Tolerance: same float32 operations in the same order → 1e-6 relative."""
    teacher = tiny_model(n_masks=4, widths=(4, 8), role="teacher", seed=1)
    student = tiny_model(n_masks=1, widths=(2, 4), role="student", slm_upsample=2)
    d = DistillationLoss(teacher, student, mask_kind=kind, feature_levels=[])
    ph = student.physics
    out = {k: v.detach() for k, v in d(None, None, None, ph, student).items()}
    assert set(out) == {"mask"}
    tm = torch.polar(torch.ones_like(teacher.physics.mask_phase()), teacher.physics.mask_phase()).detach()
    if kind == "spectrum":
        L, h, w = tm.shape
        want = spectrum_mask_loss(tm.reshape(L, h // 2, 2, w // 2, 2).mean(dim=(2, 4)), _masks(ph.theta.detach()))
    else:
        want = gram_mask_loss(tm, _masks(ph.mask_phase().detach()))
    assert float(out["mask"]) > 0
    assert float(out["mask"]) == pytest.approx(float(d.mask_term(ph).detach()), rel=1e-6)
    assert float(out["mask"]) == pytest.approx(float(want), rel=1e-5)


# ---------------------------------------------------------------- values, not only comparisons
def test_feature_loss_known_values():
    """Each kind's value on inputs with a closed form (the tests above only check zero at
    equality, which a wrong kind or axis also gives). Exact in float64."""
    f_t = torch.zeros(1, 2, 1, 2, dtype=torch.float64)
    f_s = torch.full_like(f_t, 0.5)
    assert float(feature_loss(f_s, f_t, "mse")) == pytest.approx(0.25, abs=1e-15)
    assert float(feature_loss(f_s, f_t, "l1")) == pytest.approx(0.5, abs=1e-15)
    # channel vectors per pixel: (1, 0) vs (0, 1) → 1 − cos = 1; (1, 1) vs (2, 2) → 0; mean 0.5
    a = torch.tensor([[[[1.0, 1.0]], [[0.0, 1.0]]]], dtype=torch.float64)
    b = torch.tensor([[[[0.0, 2.0]], [[1.0, 2.0]]]], dtype=torch.float64)
    assert float(feature_loss(a, b, "cosine")) == pytest.approx(0.5, abs=1e-12)
    with pytest.raises(LossError, match=r"student \(1, 2, 1, 2\) vs teacher \(1, 3, 1, 2\)"):
        feature_loss(f_s, torch.zeros(1, 3, 1, 2), "mse")
    with pytest.raises(LossError, match="feature loss kind 'bad' is not one of"):
        feature_loss(f_s, f_t, "bad")


def test_recon_error_known_value_with_real_and_imaginary_errors():
    """x = 1, x̂ = 1 ± c with c = 0.3 + 0.4i on alternating pixels: Σ(x̂ − x) = 0 keeps the
    alignment the identity, |x̂ − x|² = |c|² = 0.25 everywhere → MSE 0.25 and L1 0.5 (both the real
    and the imaginary part count; sqrt(0.25 + 1e-12) differs from 0.5 by 1e-12)."""
    x = torch.ones(1, 2, 2, dtype=torch.complex128)
    c = 0.3 + 0.4j
    xh = x + torch.tensor([[[c, -c], [-c, c]]], dtype=torch.complex128)
    assert float(recon_error(xh, x)) == pytest.approx(0.25, abs=1e-14)
    assert float(recon_error(xh, x, "l1")) == pytest.approx(0.5, abs=1e-11)
    with pytest.raises(LossError, match="reconstruction loss kind 'bad' is not one of"):
        recon_error(xh, x, "bad")


def _plane_wave(n, k, amp=1.0):
    x = torch.arange(n, dtype=torch.float64)
    phase = (2 * math.pi * k * x / n).expand(n, n)  # varies along x only
    return amp * torch.polar(torch.ones(n, n, dtype=torch.float64), phase)


def test_radial_profile_and_spectrum_loss_known_values():
    """A plane wave e^{2πi·3x/16} has all its power at ring 3 (frequency in samples, not cycles
    per sample); 2-D input is one mask; a tiny amplitude does not change the distribution; the
    profile has round(√2·8) + 1 = 12 rings. Spectrum loss of teacher rings {0: ½, 5: ½} against a
    student at ring 3: (¼ + ¼ + 1) / ½ = 3."""
    p = radial_power_profile(_plane_wave(16, 3))
    assert p.shape == (1, 12)
    want = torch.zeros(1, 12, dtype=torch.float64)
    want[0, 3] = 1.0
    assert torch.allclose(p, want, atol=1e-12)
    assert torch.allclose(radial_power_profile(_plane_wave(16, 3, amp=1e-3)), want, atol=1e-12)
    teacher = torch.stack([torch.ones(16, 16, dtype=torch.complex128), _plane_wave(16, 5)])
    assert float(spectrum_mask_loss(teacher, _plane_wave(16, 3)[None])) == pytest.approx(3.0, abs=1e-12)


def test_distillation_levels_adapters_and_feature_output_terms(tiny_model):
    """Level checks against each network separately; 1×1 adapters only where widths differ; the
    feature and output terms equal the loss functions applied to the student's and the teacher's
    own outputs (noise-free teacher). Same float32 operations → 1e-6 relative."""
    teacher = tiny_model(n_masks=2, widths=(4, 8), role="teacher", seed=1)
    student = tiny_model(n_masks=1, widths=(2, 4, 8), role="student")
    nt = len(teacher.reconstructor.feature_channels)
    with pytest.raises(LossError, match=rf"decoder level {nt}, but the teacher has levels 0 … {nt - 1}"):
        DistillationLoss(teacher, student, feature_levels=[nt])  # the student has it, the teacher not
    same = DistillationLoss(teacher, tiny_model(n_masks=1, widths=(4, 8)), feature_levels=[0])
    assert isinstance(same.adapters["0"], torch.nn.Identity)
    d = DistillationLoss(teacher, student, mask_kind="none", feature_levels=[0], feature_kind="l1",
                         use_output=True, teacher_noise="none")
    assert d.adapters["0"].kernel_size == (1, 1)
    x = torch.polar(torch.ones(2, 16, 16), torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0)))
    with torch.no_grad():
        y, out = student(x, seeds=[1, 2], noise="none")
        terms = d(out, x, y, student.physics, student)
        t_out = teacher.reconstructor(teacher.physics.measure(x, noise="none"), teacher.physics)
        want_f = feature_loss(d.adapters["0"](out.features[0]), t_out.features[0], "l1")
        want_o = recon_error(out.x, t_out.x)
    assert set(terms) == {"feature", "output"}
    assert float(terms["feature"]) == pytest.approx(float(want_f), rel=1e-6) and float(want_f) > 0
    assert float(terms["output"]) == pytest.approx(float(want_o), rel=1e-6) and float(want_o) > 0


# ------------------------------------------- values the mutation run (issue 20) showed untested
def test_mask_losses_accept_2d_masks_and_mixed_dtypes():
    """A 2-D mask is one mask; teacher and student of different precision (complex128 vs
    complex64) or a real-valued teacher modulation give the value of the common complex dtype
    (the explicit n×n form on promoted inputs; float64 round-off of float32 inputs → 1e-6)."""
    g = torch.Generator().manual_seed(3)
    p = torch.randn(2, 4, 4, generator=g, dtype=torch.complex128)
    q = torch.randn(1, 4, 4, generator=g, dtype=torch.complex128)
    assert float(gram_mask_loss(p[0], q[0])) == pytest.approx(float(gram_mask_loss(p[:1], q)), rel=1e-12)
    want = gram_mask_loss_explicit(p, q.to(torch.complex64).to(torch.complex128))
    assert float(gram_mask_loss(p, q.to(torch.complex64))) == pytest.approx(float(want), rel=1e-12)
    pr = p.real.contiguous()                                   # real teacher, complex student
    want = gram_mask_loss_explicit(pr.to(torch.complex128), q)
    assert float(gram_mask_loss(pr, q)) == pytest.approx(float(want), rel=1e-12)
    # spectrum loss: a real teacher does not strip the student's imaginary part
    assert float(spectrum_mask_loss(pr, q)) == pytest.approx(float(spectrum_mask_loss(pr.to(torch.complex128), q)), rel=1e-12)


def test_feature_loss_default_kind_and_cosine_axis():
    """Default kind is MSE; cosine compares channel vectors (axis 1) per pixel: computed here
    explicitly on a 2×2 map with 3 channels. Exact in float64 to 1e-12."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64)
    b = torch.randn(1, 3, 2, 2, generator=g, dtype=torch.float64)
    assert float(feature_loss(a, b)) == pytest.approx(float(((a - b) ** 2).mean()), abs=1e-15)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert float(feature_loss(a, b, "cosine")) == pytest.approx(float((1 - cos).mean()), abs=1e-12)


def test_reconstruction_loss_module():
    """{"recon": recon_error(x_net.x, x, kind)} with kind "mse" by default; a bad kind names the
    config key."""
    from learning.losses import ReconstructionLoss
    from learning.systems import ReconOutput
    x = torch.ones(1, 2, 2, dtype=torch.complex128)
    c = 0.3 + 0.4j
    out = ReconOutput(x=x + torch.tensor([[[c, -c], [-c, c]]], dtype=torch.complex128), x0=x)
    assert set(ReconstructionLoss()(out, x, None, None, None)) == {"recon"}
    assert float(ReconstructionLoss()(out, x, None, None, None)["recon"]) == pytest.approx(0.25, abs=1e-14)
    assert float(ReconstructionLoss("l1")(out, x, None, None, None)["recon"]) == pytest.approx(0.5, abs=1e-11)
    with pytest.raises(LossError, match=r"^train\.recon_loss = 'bad' is not one of \('mse', 'l1'\)$"):
        ReconstructionLoss("bad")


def test_distillation_config_errors_name_the_key_and_the_levels(tiny_model):
    import re
    teacher = tiny_model(n_masks=2, widths=(4, 8, 16), role="teacher")
    student = tiny_model(n_masks=1, widths=(2, 4), role="student")
    with pytest.raises(LossError, match=r"^distill\.mask_loss = 'bad' is not one of \('gram', 'spectrum', 'none'\)$"):
        DistillationLoss(teacher, student, mask_kind="bad")
    with pytest.raises(LossError, match=r"^distill\.feature_kind = 'bad' is not one of \('mse', 'l1', 'cosine'\)$"):
        DistillationLoss(teacher, student, feature_kind="bad")
    nt, ns = len(teacher.reconstructor.feature_channels), len(student.reconstructor.feature_channels)
    assert ns < nt
    with pytest.raises(LossError, match=re.escape(
            f"distill.feature_levels asks for decoder level {ns}, but the teacher has levels 0 … {nt - 1} "
            f"and the student 0 … {ns - 1} (level k at H/2^k); choose levels both networks have")):
        DistillationLoss(teacher, student, feature_levels=[ns])        # the teacher has it, the student not
    small = tiny_model(n_masks=1, widths=(2, 4), size=8)
    with pytest.raises(LossError, match=re.escape(
            f"teacher objects are {teacher.physics.in_shape}, student objects {small.physics.in_shape}; "
            f"distil between systems of the same image size")):
        DistillationLoss(teacher, small)


def test_distillation_without_mask_term_keeps_no_teacher_masks_and_modes(tiny_model):
    """mask_kind "none": no teacher masks held or saved; train() puts the loss (adapters) in
    training mode and the teacher stays in eval; .double() converts the teacher too (and leaves
    the complex teacher masks complex)."""
    teacher = tiny_model(n_masks=2, widths=(4, 8), role="teacher")
    student = tiny_model(n_masks=1, widths=(2, 4), role="student")
    d = DistillationLoss(teacher, student, mask_kind="none")
    assert d.teacher_masks is None and "teacher_masks" not in d.state_dict()
    d.eval()
    d.train()
    assert d.training and d.adapters.training and not teacher.training
    d2 = DistillationLoss(teacher, student, mask_kind="spectrum").double()
    assert d2.teacher_masks.is_complex()
    assert all(p.dtype == torch.float64 for p in teacher.reconstructor.parameters())
    # torch's keyword arguments reach both halves: to_empty(recurse=False) leaves submodules alone
    ptrs = [p.data_ptr() for p in list(d2.adapters.parameters()) + list(teacher.parameters())]
    d2.to_empty(device="cpu", recurse=False)
    assert [p.data_ptr() for p in list(d2.adapters.parameters()) + list(teacher.parameters())] == ptrs
    assert all(p.dtype == torch.float64 for p in teacher.reconstructor.parameters())


def test_teacher_output_uses_its_own_noise_stream(tiny_model):
    """The teacher's measurements use the noise mode asked for (default "exact") with sample b's
    generator seeded seeds[b] + 7777; "none" is noiseless and needs no seeds; a noisy teacher
    without seeds is refused with its message. Same operations → equal outputs (1e-6)."""
    from types import SimpleNamespace
    from learning.systems import sample_generators
    teacher = tiny_model(n_masks=2, widths=(4, 8), role="teacher", seed=1, photons=50.0)
    student = tiny_model(n_masks=1, widths=(2, 4), role="student")
    x = torch.polar(torch.ones(2, 16, 16), torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0)))
    seeds = [3, 4]

    def want(noise, s):
        with torch.no_grad():
            gens = sample_generators(s) if s is not None else None
            return teacher.reconstructor(teacher.physics.measure(x, noise=noise, generators=gens), teacher.physics).x

    d = DistillationLoss(teacher, student, mask_kind="none", feature_levels=[], use_output=True)
    got = d.teacher_output(x, seeds).x
    assert torch.allclose(got, want("exact", [s + 7777 for s in seeds]), rtol=0, atol=1e-6)
    assert not torch.allclose(got, want("exact", seeds), rtol=0, atol=1e-3)      # another stream
    dd = DistillationLoss(teacher, student, mask_kind="none", feature_levels=[], teacher_noise="differentiable")
    assert torch.allclose(dd.teacher_output(x, seeds).x, want("differentiable", [s + 7777 for s in seeds]), rtol=0, atol=1e-6)
    dn = DistillationLoss(teacher, student, mask_kind="none", feature_levels=[], teacher_noise="none")
    assert torch.allclose(dn.teacher_output(x, None).x, want("none", None), rtol=0, atol=1e-6)
    with pytest.raises(LossError, match=r"^the teacher's noisy measurements need the per-sample seeds "
                                        r"of the student's batch \(x_net\.seeds\)$"):
        d.teacher_output(x, None)
    # forward hands the student's seeds to the teacher; features alone give only the feature term
    with torch.no_grad():
        y, out = student(x, seeds=seeds, noise="none")
        t = d(out, x, y, student.physics, student)
    assert set(t) == {"output"}
    assert float(t["output"]) == pytest.approx(float(recon_error(out.x, want("exact", [s + 7777 for s in seeds]))), rel=1e-5)
    df = DistillationLoss(teacher, student, mask_kind="none", feature_levels=[0], use_output=False, teacher_noise="none")
    with torch.no_grad():
        assert set(df(out, x, y, student.physics, student)) == {"feature"}
    with pytest.raises(LossError, match=r"^feature distillation needs a student with a network \(model\.widths\)$"):
        df(SimpleNamespace(x=out.x, features=[], seeds=seeds), x, y, student.physics, student)


def test_distillation_loss_to_real_dtype_keeps_the_teacher_modulation_complex(tiny_model):
    """``Module.to(torch.float64)`` casts complex buffers to float64 and drops the imaginary part
    (torch's semantics); the teacher's modulation e^{iθ} must survive it — and ``.double()``,
    ``.float()`` — as a complex tensor with the same values (|M| = 1 everywhere, the imaginary
    part sin θ kept; exact: float32 → float64 → float32 is lossless), and the mask term must not
    change beyond float32 round-off (1e-5 relative)."""
    teacher = tiny_model(n_masks=4, widths=(4, 8), role="teacher", seed=1)
    student = tiny_model(n_masks=1, widths=(2, 4), role="student", slm_upsample=2)
    d = DistillationLoss(teacher, student, mask_kind="gram", feature_levels=[])
    before = d.teacher_masks.clone()
    assert before.dtype == torch.complex64 and float(before.imag.abs().max()) > 0.5  # the sin θ part
    term = float(d.mask_term(student.physics).detach())
    assert d.to(torch.float64) is d
    assert d.teacher_masks.dtype == torch.complex128
    assert torch.equal(d.teacher_masks, before.to(torch.complex128))
    assert "teacher_masks" in dict(d.named_buffers())                  # still a buffer (state_dict, .to)
    assert float(d.mask_term(student.physics).detach()) == pytest.approx(term, rel=1e-5)
    d.float()
    assert d.teacher_masks.dtype == torch.complex64 and torch.equal(d.teacher_masks, before)
    d.double()
    assert torch.equal(d.teacher_masks, before.to(torch.complex128))
    with pytest.warns(UserWarning, match="Complex modules"):           # torch's warning for a complex target
        d.to(torch.complex64)                                           # … which converts the buffer as is
    assert torch.equal(d.teacher_masks, before)
    assert torch.equal(d.state_dict()["teacher_masks"], before)


def test_distillation_loss_conversion_without_masks_and_after_a_failed_conversion(tiny_model):
    """Without a mask term there is no teacher-mask buffer to convert (.to(float64) converts the
    adapters and the teacher and leaves teacher_masks None); and a conversion that fails half way
    (here fn raises on the first parameter) leaves the teacher modulation in place, still a buffer,
    unchanged — not dropped with the exception."""
    teacher = tiny_model(n_masks=2, widths=(4, 8), role="teacher")
    student = tiny_model(n_masks=1, widths=(2, 4), role="student")
    d = DistillationLoss(teacher, student, mask_kind="none", feature_levels=[0])
    d.to(torch.float64)
    assert d.teacher_masks is None and "teacher_masks" not in d.state_dict()
    assert all(p.dtype == torch.float64 for p in list(d.adapters.parameters()) + list(teacher.parameters()))
    d2 = DistillationLoss(teacher, student, mask_kind="spectrum", feature_levels=[0])
    assert len(list(d2.adapters.parameters())) > 0                     # super()._apply calls fn on them
    before = d2.teacher_masks.clone()

    def fail(t):
        raise RuntimeError("conversion failed")

    with pytest.raises(RuntimeError, match="conversion failed"):
        d2._apply(fail)
    assert torch.equal(d2.state_dict()["teacher_masks"], before)
    assert torch.equal(d2.teacher_masks, before)
