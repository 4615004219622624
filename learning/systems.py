r"""Learnable phase-retrieval systems: coded optics + physics-based estimate + recovery network.

A system has two parts, the deepinv split (a reconstructor is called as ``model(y, physics)``):

* :class:`CodedPhysics` — the encoder: a :class:`optics.cdp.CDPSystem` with ``L`` learnable
  phase masks (:class:`optics.masks.PhaseMask`), optionally shown on an
  :class:`optics.slm.SLM` (pixel pitch an integer multiple of the simulation pitch, quantised
  with a straight-through estimator while training and to the exact LUT levels in eval mode,
  fill factor, crosstalk) and an optional :class:`optics.sensor.Sensor` — or, instead of a
  camera, a noise model on the intensity (:mod:`optics.noise`, e.g. prDeep's, the standard CDP
  protocol; measurements then stay in the operator's units). Noise is chosen by an
  argument of :meth:`CodedPhysics.measure`, never by ``train()``/``eval()``:
  ``"differentiable"`` (reparametrised Gaussian, gradients reach the masks), ``"exact"``
  (Poisson + read noise, rounding; or the noise model's own draw) or ``"none"``. Every sample draws its noise from its own
  generator, so a batch split across processes sees the same noise as the whole batch.
* :class:`Reconstructor` — a few unrolled error-reduction (or Wirtinger-flow) iterations
  through the same operator (:mod:`learning.solvers`, ``differentiable=True``, so gradients
  reach the masks), the global phase removed, then a :class:`~learning.networks.UNet` that
  refines the estimate (:class:`~learning.networks.OutputHead`).

Why not a back-projection ``Σ_l A_lᴴ √y_l`` as network input: for Fraunhofer CDPs it discards
the detector phases entirely and carries almost no structure (≈ 5 dB PSNR, worse than a flat
guess), so the network would have to learn phase retrieval from scratch. The unrolled solver
starts from the constant image scaled to the measured energy (deterministic, batch-independent;
optionally refined by power iterations on ``Aᴴ diag(y) A``, the spectral start of Candès et al.
2015) and improves it with the physics. Measured at 32², phase objects in [0, π], 2×
oversampled Fraunhofer CDPs, 1000 photons/pixel: flat start 20.8 dB phase PSNR; 5 unrolled ER
steps from it 30.4 dB (L = 1) and 40.9 dB (L = 4); 10 power iterations first make it worse for
L = 1 (6.7 dB: the top eigenvector of one CDP is a poor start), hence ``n_power_iter = 0``.

:class:`PhaseRetrievalModel` puts both together for training: ``model(x, seeds=…)`` simulates
the measurements of ``x`` through its own optics and reconstructs them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import torch
from torch import nn

from optics.cdp import CDPSystem
from optics.masks import PhaseMask

from .errors import SystemsError
from .networks import OutputHead, UNet, field_to_channels
from .solvers import error_reduction, estimate_norm_sq, wirtinger_flow

__all__ = ["NOISE_MODES", "FIRST_ESTIMATES", "MODEL_KINDS", "build_reconstructor", "SystemsError", "CodedPhysics", "ReconOutput",
           "Reconstructor", "PhaseRetrievalModel", "first_estimate", "remove_global_phase",
           "sample_generators", "build_phase_mask"]

NOISE_MODES = ("differentiable", "exact", "none")
#: ``model.kind``: the deep-unfolding reconstructor (:mod:`learning.unfolding`, the default) or
#: :class:`Reconstructor` (unrolled solver + one U-Net)
MODEL_KINDS = ("unfolded", "unet")
FIRST_ESTIMATES = ("er", "wf")
TWO_PI = 2.0 * math.pi


def sample_generators(seeds: Sequence[int], device="cpu") -> List[torch.Generator]:
    """One seeded :class:`torch.Generator` per sample (noise independent of the batch split)."""
    out = []
    for s in seeds:
        g = torch.Generator(device=device)
        g.manual_seed(int(s) % (2 ** 63))
        out.append(g)
    return out


class CodedPhysics(nn.Module):
    """The coded optics of a system (module docstring): masks → (SLM) → propagation → sensor.

    ``system`` must be built without a sensor (the sensor is held here and called explicitly).
    ``masks``: the :class:`~optics.masks.PhaseMask` the system was built with (default: the
    system's ``masks`` attribute); its ``theta`` are the phases being designed. ``noise``: an
    :class:`optics.noise.NoiseModel` on ``|A x|²`` instead of a sensor (not both).
    """

    def __init__(self, system: CDPSystem, sensor: Optional[nn.Module] = None, *,
                 masks: Optional[nn.Module] = None, noise=None):
        super().__init__()
        masks = masks if masks is not None else getattr(system, "masks", None)
        self._masks = [masks]  # a list: the module is registered once, inside the system
        if getattr(system, "sensor", None) is not None:
            raise SystemsError("pass the sensor to CodedPhysics, not to the CDPSystem (noise is "
                              "chosen explicitly by CodedPhysics.measure)")
        if sensor is not None and getattr(sensor, "binning", 1) != 1:
            raise SystemsError(
                f"the sensor has a camera pitch (binning {getattr(sensor, 'binning', None)}); the unrolled "
                f"solver needs |A x|² per detector sample — leave sensor.pitch_m unset")
        if noise is not None and sensor is not None:
            raise SystemsError("give either a sensor (a camera with its own noise) or a noise model on the "
                               "intensity (optics.noise), not both")
        if noise is not None and not callable(getattr(noise, "sample", None)):
            raise SystemsError(f"noise must be an optics.noise.NoiseModel (e.g. PrDeepNoise(27)), got "
                               f"{type(noise).__name__}")
        self.system = system
        self.sensor = sensor
        self.noise = noise

    @property
    def noisy(self) -> bool:
        """Whether :meth:`measure` draws noise (a sensor, or a noise model other than ``none``)."""
        return self.sensor is not None or (self.noise is not None and self.noise.name != "none")

    # geometry ---------------------------------------------------------------------------------
    @property
    def n_masks(self) -> int:
        return self.system.n_masks

    @property
    def in_shape(self):
        return self.system.in_shape

    @property
    def out_shape(self):
        return self.system.out_shape

    @property
    def slm(self):
        return self.system.slm

    @property
    def theta(self) -> Optional[torch.Tensor]:
        """The mask phases (rad) being designed: ``(L, h, w)`` per SLM pixel (or per simulation
        sample without an SLM); ``None`` for a fixed complex modulation."""
        return getattr(self._masks[0], "theta", None)

    @property
    def upsample(self) -> int:
        return 1 if self.slm is None else int(self.slm.upsample)

    @property
    def pixel_pitch_m(self) -> Optional[float]:
        """Pitch of the grid of :attr:`theta` (the SLM pixel pitch, else the simulation pitch;
        ``None`` for the unit-free operator without an SLM, which has no pitch)."""
        if self.slm is not None:
            return float(self.slm.pixel_pitch_m)
        return None if self.system.pitch_m is None else float(self.system.pitch_m)

    # operator (what the solvers use) ------------------------------------------------------------
    def A(self, x):
        return self.system.A(x)

    def A_adjoint(self, z):
        return self.system.A_adjoint(z)

    def modulation(self) -> torch.Tensor:
        return self.system.modulation()

    # masks ----------------------------------------------------------------------------------------
    def mask_phase(self) -> torch.Tensor:
        """Pre-quantisation phases on the simulation grid, ``(L, H, W)`` (each SLM pixel
        repeated ``upsample × upsample``): what the mask-distillation losses compare."""
        th = self.theta
        if th is None:
            return torch.angle(self.modulation())
        u = self.upsample
        return th.repeat_interleave(u, dim=-2).repeat_interleave(u, dim=-1) if u > 1 else th

    def design_phase(self) -> torch.Tensor:
        """The phases to display, ``(L, h, w)`` on the SLM-pixel grid, in ``[0, 2π)`` for a
        continuous design and exactly the LUT levels with a quantising SLM (no gradient)."""
        th = self.theta
        if th is None:
            raise SystemsError("this system has a fixed complex modulation, not designed phases")
        th = th.detach()
        slm = self.slm
        if slm is not None and slm.quantization != "none":
            return slm.lut.quantize(th)
        return torch.remainder(th, TWO_PI)

    def design_levels(self) -> Optional[int]:
        """Number of equispaced phase levels of the design (``None``: continuous)."""
        slm = self.slm
        if slm is None or slm.quantization == "none":
            return None
        return int(slm.lut.n_levels)

    # measurements -----------------------------------------------------------------------------------
    def measure(self, x: torch.Tensor, *, noise: str = "differentiable",
                generators: Optional[Sequence[torch.Generator]] = None) -> torch.Tensor:
        """Measurements of ``x`` (``(B, H, W)``) in photon units (what the solvers fit).

        ``noise``: ``"differentiable"`` (:meth:`Sensor.sample_differentiable`), ``"exact"``
        (:meth:`Sensor.sample`) or ``"none"`` (:meth:`Sensor.photons`, noiseless); the DN are
        mapped back to photons with :meth:`Sensor.dn_to_photons` and clamped at 0. Sample ``b``
        draws its noise from ``generators[b]`` (required with noise). With a noise model instead
        of a sensor the measurements stay in the operator's units: ``"exact"`` is the model's own
        draw, ``"differentiable"`` the same for prDeep and Gaussian noise (reparametrised; the
        intensity clamped at 1e-12 so that √I has a finite gradient) and for Poisson the Gaussian of
        the same variance. Without either, the noiseless intensity ``|A x|²`` is returned whatever
        ``noise`` says.
        """
        if noise not in NOISE_MODES:
            raise SystemsError(f"noise = {noise!r} is not one of {NOISE_MODES}")
        inten = self.system.intensity(x)
        s = self.sensor
        if s is None:
            if not self.noisy or noise == "none":
                return inten
            if generators is None or len(generators) != inten.shape[0]:
                raise SystemsError(f"noise = {noise!r} needs one generator per sample "
                                   f"({inten.shape[0]}), got {None if generators is None else len(generators)}")
            return torch.stack([self._model_sample(inten[b], g, noise) for b, g in enumerate(generators)])
        if noise == "none":
            return s.photons(inten)
        if generators is None or len(generators) != inten.shape[0]:
            raise SystemsError(f"noise = {noise!r} needs one generator per sample "
                              f"({inten.shape[0]}), got {None if generators is None else len(generators)}")
        fn = s.sample_differentiable if noise == "differentiable" else s.sample
        dn = torch.stack([fn(inten[b], generator=g) for b, g in enumerate(generators)])
        return s.dn_to_photons(dn).clamp_min(0.0)


    def _model_sample(self, inten: torch.Tensor, generator, noise: str) -> torch.Tensor:
        nm = self.noise
        if noise == "exact":
            return nm.sample(inten, generator=generator)
        inten = inten.clamp_min(1e-12)
        if nm.name == "poisson":  # the draw has no gradient: the Gaussian of the same variance
            n = torch.randn(inten.shape, generator=generator, dtype=inten.dtype, device=inten.device)
            return (inten + torch.sqrt(inten / nm.photons_per_unit) * n).clamp_min(0.0)
        return nm.sample(inten, generator=generator)


def remove_global_phase(x: torch.Tensor) -> torch.Tensor:
    """``x · conj(sgn(Σ x))`` per sample: the global phase fixed so that the image mean is real
    and positive (a gauge computable without the ground truth)."""
    s = x.sum(dim=(-2, -1), keepdim=True)
    mag = s.abs()
    ph = torch.where(mag > 0, s.conj() / torch.where(mag > 0, mag, torch.ones_like(mag)),
                     torch.ones_like(s))
    return x * ph


def first_estimate(physics, y: torch.Tensor, *, solver: str = "er", n_iter: int = 5,
                   n_power_iter: int = 0, encoding: str = "phase") -> torch.Tensor:
    """Physics-based estimate, differentiable w.r.t. ``y`` and the masks (module docstring).

    Start: the constant image (after ``n_power_iter`` power iterations on ``Aᴴ diag(y) A``,
    default none), scaled to ``‖x‖² = Σ y / s``, ``s = tr(AᴴA)/n``; then ``n_iter`` unrolled
    error-reduction (``"er"``; with realness + positivity for amplitude objects) or Wirtinger-flow
    (``"wf"``) iterations. The global phase is removed (:func:`remove_global_phase`) and the
    result scaled to unit RMS modulus (the photon budget fixes no absolute scale).
    """
    if solver not in FIRST_ESTIMATES:
        raise SystemsError(f"first-estimate solver {solver!r} is not one of {FIRST_ESTIMATES}")
    op = physics.system if isinstance(physics, CodedPhysics) else physics
    h, w = op.in_shape
    cdtype = torch.complex128 if y.dtype == torch.float64 else torch.complex64
    s = estimate_norm_sq(op, (h, w), dtype=cdtype, device=y.device)
    v = torch.ones(y.shape[:-3] + (h, w), dtype=cdtype, device=y.device)
    yc = y.to(cdtype)
    for _ in range(int(n_power_iter)):
        v = op.A_adjoint(yc * op.A(v))
        v = v / torch.sqrt((v.real ** 2 + v.imag ** 2).sum(dim=(-2, -1), keepdim=True)).clamp_min(1e-30)
    if n_power_iter == 0:
        v = v / math.sqrt(h * w)
    norm = torch.sqrt(y.sum(dim=(-3, -2, -1)) / s)[..., None, None]
    x0 = v * norm.to(cdtype)
    if n_iter > 0:
        kw = dict(n_iter=int(n_iter), x0=x0, differentiable=True, history=False, norm_sq=s,
                  tol=None, residual_tol=None)
        if solver == "er":
            if encoding == "amplitude":
                kw.update(real=True, nonnegative=True)
            x0 = error_reduction(op, y, **kw).x
        else:
            x0 = wirtinger_flow(op, y, **kw).x
    x0 = remove_global_phase(x0)
    rms = torch.sqrt((x0.real ** 2 + x0.imag ** 2).mean(dim=(-2, -1), keepdim=True)).clamp_min(1e-30)
    return x0 / rms


@dataclass
class ReconOutput:
    """What a reconstructor returns: the estimate ``x`` ``(B, H, W)`` complex, the physics-based
    first estimate ``x0``, the decoder ``features`` (level ``k`` at ``H/2^k``) and the per-sample noise
    ``seeds`` of the measurements (a teacher measuring the same objects derives its own noise
    from them)."""

    x: torch.Tensor
    x0: torch.Tensor
    features: List[torch.Tensor] = field(default_factory=list)
    seeds: Optional[List[int]] = None


class Reconstructor(nn.Module):
    """``model(y, physics)``: unrolled solver (first estimate) + U-Net refinement.

    ``widths=()`` (empty) means no network: the output is the first estimate projected on the
    encoding (unit modulus for phase objects, real for amplitude objects).
    """

    def __init__(self, *, encoding: str = "phase", widths: Sequence[int] = (16, 32, 64),
                 norm: str = "batch", solver: str = "er", n_unrolled: int = 5, n_power_iter: int = 0):
        super().__init__()
        if solver not in FIRST_ESTIMATES:
            raise SystemsError(f"model.solver = {solver!r} is not one of {FIRST_ESTIMATES}")
        if n_unrolled < 0 or n_power_iter < 0:
            raise SystemsError(f"model.n_unrolled ({n_unrolled}) and model.n_power_iter ({n_power_iter}) "
                              f"must be >= 0")
        self.encoding = encoding
        self.solver = solver
        self.n_unrolled = int(n_unrolled)
        self.n_power_iter = int(n_power_iter)
        self.head = OutputHead(encoding)
        self.net = UNet(3, self.head.channels, widths, norm) if len(widths) else None

    @property
    def feature_channels(self) -> List[int]:
        return [] if self.net is None else self.net.feature_channels

    def forward(self, y: torch.Tensor, physics) -> ReconOutput:
        x0 = first_estimate(physics, y, solver=self.solver, n_iter=self.n_unrolled,
                            n_power_iter=self.n_power_iter, encoding=self.encoding)
        if self.net is None:
            zero = torch.zeros((x0.shape[0], self.head.channels) + tuple(x0.shape[-2:]),
                               dtype=x0.real.dtype, device=x0.device)
            return ReconOutput(x=self.head(zero, x0), x0=x0)
        delta, feats = self.net(field_to_channels(x0))
        return ReconOutput(x=self.head(delta, x0), x0=x0, features=feats)


class PhaseRetrievalModel(nn.Module):
    """A complete system: :class:`CodedPhysics` + :class:`Reconstructor`.

    ``model(x, seeds=…, noise=…)`` measures ``x`` through its own optics (sample ``b``'s noise
    from ``seeds[b]``) and returns ``(y, ReconOutput)``. ``learn_masks=False`` freezes the mask
    phases (a fixed random mask baseline).
    """

    def __init__(self, physics: CodedPhysics, reconstructor: Reconstructor, *, learn_masks: bool = True):
        super().__init__()
        self.physics = physics
        self.reconstructor = reconstructor
        th = physics.theta
        if th is not None and isinstance(th, nn.Parameter):
            th.requires_grad_(bool(learn_masks))
        self.learn_masks = bool(learn_masks) and isinstance(th, nn.Parameter)

    def mask_parameters(self) -> List[nn.Parameter]:
        th = self.physics.theta
        return [th] if self.learn_masks else []

    def network_parameters(self) -> List[nn.Parameter]:
        return [p for p in self.reconstructor.parameters() if p.requires_grad]

    def forward(self, x: torch.Tensor, *, seeds: Optional[Sequence[int]] = None,
                noise: str = "differentiable"):
        gens = None if seeds is None else sample_generators(seeds, device=x.device)
        if gens is None and noise != "none" and self.physics.noisy:
            raise SystemsError("measuring with noise needs per-sample seeds (seeds=[...])")
        y = self.physics.measure(x, noise=noise, generators=gens)
        out = self.reconstructor(y, self.physics)
        out.seeds = None if seeds is None else [int(s) for s in seeds]
        return y, out


def build_reconstructor(*, kind: str = "unfolded", encoding: str = "phase", widths: Sequence[int] = (16, 32, 64),
                        norm: str = "batch", solver: str = "er", n_unrolled: int = 5, n_power_iter: int = 0,
                        n_stages: int = 5, n_warm: int = 50, shared: bool = True,
                        normalize: str = "rms") -> nn.Module:
    """The reconstructor of a system by ``kind`` (:data:`MODEL_KINDS`): ``"unfolded"`` →
    :class:`learning.unfolding.UnfoldedReconstructor` (``normalize="rms"``: photon-unit
    measurements of unknown gain, a camera; ``"none"``: measurements in the operator's own units,
    a noise model on ``|A x|²`` as in the standard CDP protocol; ``norm``/``solver``/``n_unrolled``/
    ``n_power_iter`` unused), ``"unet"`` → :class:`Reconstructor` (``n_stages``/``n_warm``/``shared``/
    ``normalize`` unused: it always rescales its first estimate to unit RMS)."""
    if kind == "unfolded":
        from .unfolding import UnfoldedReconstructor
        return UnfoldedReconstructor(encoding=encoding, n_stages=n_stages, shared=shared, widths=widths,
                                     n_warm=n_warm, normalize=normalize)
    if kind == "unet":
        return Reconstructor(encoding=encoding, widths=widths, norm=norm, solver=solver, n_unrolled=n_unrolled,
                             n_power_iter=n_power_iter)
    raise SystemsError(f"model.kind = {kind!r} is not one of {MODEL_KINDS}")


def build_phase_mask(n_masks: int, shape, *, seed: int, role: str, learnable: bool = True) -> PhaseMask:
    """Random initial mask phases from a stream that depends on ``role`` as well as ``seed``:
    a teacher and a student built with the same seed never share their initial masks (a shared
    stream would make a mask-transfer loss look converged at step 0)."""
    offsets = {"teacher": 0x7EAC0, "student": 0x57D0E}
    if role not in offsets:
        raise SystemsError(f"role = {role!r} must be 'teacher' or 'student'")
    g = torch.Generator().manual_seed((int(seed) * 1_000_003 + offsets[role]) % (2 ** 63))
    return PhaseMask.random(int(n_masks), tuple(shape), generator=g, learnable=learnable)
