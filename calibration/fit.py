"""Differentiable fit of the near-field CDP forward model to corrected captures.

Forward model. The SLM and the propagation are the optics layer's, with the fitted physical
scalars as its tensors: an :class:`optics.slm.SLM` (``upsample`` samples per pixel,
``quantization="none"``, ``fit=("crosstalk_sigma_m", "lut")``) inside an
:class:`optics.cdp.CDPSystem` (``method="asm"``, ``pad=False``, ``fit=("z_m",)``); every
evaluation substitutes the current values with :func:`torch.func.functional_call` at
:data:`OPTICS_PATHS`. Calibration adds only what optics does not model — the camera pixel
integration and the map onto the camera. For SLM gray patterns ``g`` (P, h, w) shown centred
on the SLM, the camera sees, in electrons,

    ``μ(u) = a · [G_pix ∗ |P_z{ SLM_σ(φ(g)) }|²](T(u)) + b``

* ``φ(g)`` — the LUT phase of every SLM pixel (:meth:`optics.slm.PhaseLUT.gray_to_phase`, so
  a substituted table receives the gradient; gray 0 outside the pattern), plane-wave
  illumination;
* ``SLM_σ`` — :class:`optics.slm.SLM`: upsampling to the simulation grid
  (``sim_pitch = slm_pitch/upsample``), crosstalk as a Gaussian blur of the phase with std
  ``σ`` (sampled kernel truncated at 4σ, replicate padding; differentiable in ``σ``; Persson
  et al., Opt. Express 20, 22334 (2012)), then ``e^{iφ}``;
* ``P_z`` — angular-spectrum propagation by the distance ``z`` (periodic window, ``pad=False``);
* ``G_pix ∗`` — camera pixel integration: the mean of ``k×k`` box sub-samples per pixel
  (``Geometry.pixel_subsamples = k``, the fine model), or, with ``k = 0`` (the coarse model of
  the distance search), a Gaussian with the variance of the pixel box, ``(p_cam/M)²/12``;
* ``T(u) = R(α)·u/M + s`` — camera pixel centres ``u`` (relative to pixel ``(H//2, W//2)``,
  times the camera pitch) mapped to the SLM plane: magnification ``M``, rotation ``α``, shift
  ``s = (s_x, s_y)`` of the camera centre from the *pattern centre*; sampled bilinearly with
  :func:`torch.nn.functional.grid_sample`;
* ``a`` (intensity scale), ``b`` (background, e⁻).

Fit: weighted residuals ``r = (y − μ)/sqrt(μ + σ_r²)`` (Poisson + read noise, weights frozen
per iteration) under a robust Huber loss (δ = 3), defect and saturated pixels masked (NaN from
:meth:`calibration.camera.CameraModel.correct` — clipped speckle peaks would otherwise dominate); bounded parameters
are optimised through a sigmoid of an unbounded variable; ``a`` and ``b`` are profiled out by
weighted linear least squares at every step (variable projection), so the optimiser sees only
the geometry. The distance landscape is multimodal (the near-field pattern decorrelates every
few per cent of ``z``): several starts (default 7) spread over ``±distance_range`` are each registered
with :func:`calibration.registration.register` for the initial shift/rotation/magnification,
run briefly, and the best are refined with L-BFGS.

Joint LUT (``joint_lut=``): the gray→phase table of :mod:`calibration.lut` (its monotone
Bernstein shape and grating scale) becomes free too, and the grating harmonics join the
residuals with the law evaluated at the fit's own crosstalk width and distance. The random
patterns use every gray level, so they pin the LUT down where the grating law alone trades
crosstalk against LUT shape.

Uncertainties (statistical): the central finite-difference Jacobian ``J`` of the weighted
residuals with respect to all parameters including ``a`` and ``b`` (relative steps; forward-mode
AD is not available through every op used) gives, per parameter, the larger of ``s²(JᵀJ)⁻¹``
(``s²`` the reduced χ² when above 1) and the cluster-robust sandwich covariance
``B·Σ_c (J_cᵀr_c)(J_cᵀr_c)ᵀ·B`` over clusters ``c`` = (frame, ``tile_px``-square tile),
``B = (JᵀJ)⁻¹``. The sandwich does not assume independent residuals: model error is correlated
over speckles and tiles, so ``s²(JᵀJ)⁻¹`` alone was 2–3× too small for the geometry on independent
benches. Optionally also a leave-one-frame-out jackknife (:func:`jackknife`). Neither sees a model
error common to all frames (grid pitch, sampled crosstalk kernel, bilinear sampling): that is
added by :func:`with_model_error` from the same fit on a model twice as coarse
(``σ_model = |θ_fine − θ_coarse|``), which ``phaseforge calibrate`` does; ``FitResult.std`` is then
the total, ``std_statistical`` and ``std_model`` its parts. Without it, uncovered biases on
independent benches (tests/calibration/bench_sim.py) were crosstalk +15 … +65 σ_stat and the
background −10 … −16 σ_stat (≈ −35 e⁻ at 4000 e⁻ mean): the bilinear sampling of the intensity
lowers the model's contrast, which the background and the crosstalk width absorb (bicubic
sampling overshoots to ≈ +50 e⁻ instead). Quality: reduced χ², Pearson ``r`` per frame, residual maps.
A failed fit — non-finite loss, a parameter on its bound, an unidentifiable parameter (singular
``JᵀJ``), poor correlation or χ² — raises :class:`~calibration.errors.FitError` saying which.

Not modelled (documented limits): illumination non-uniformity beyond the flat-field division,
SLM fill factor (:class:`~optics.slm.SLM` has one; the fit keeps 1: at 4 samples per pixel a 90 %
fill factor has no gap to draw), lens aberrations (a defocus of a relay is absorbed into ``z``), polarisation.
The grating law of :mod:`calibration.lut` (used by the joint LUT) stays a local 1-D model: the
grating is periodic, and the SLM blur pads by replication and the optics propagators are 2-D.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from torch import nn
from torch.func import functional_call

from optics.cdp import CDPSystem
from optics.slm import SLM, PhaseLUT

from ._threads import single_thread
from .errors import FitError, RegistrationError
from .registration import pearson, register

__all__ = ["Geometry", "geometry_for", "NearFieldModel", "OPTICS_PATHS", "FitResult", "fit_parameters", "refined_lut", "jackknife",
           "with_model_error", "evaluate", "PARAMS", "UNITS"]

PARAMS = ("distance_m", "magnification", "rotation_rad", "shift_x_m", "shift_y_m", "crosstalk_sigma_m")
UNITS = {"distance_m": "m", "magnification": "1", "rotation_rad": "rad", "shift_x_m": "m", "shift_y_m": "m",
         "crosstalk_sigma_m": "m", "intensity_scale": "e-/arb", "background_e": "e-"}


@dataclass
class Geometry:
    wavelength_m: float
    slm_pitch_m: float
    camera_pitch_m: float
    camera_shape: tuple
    upsample: int = 2
    sim_n: int = 128
    pixel_subsamples: int = 0   # 0: Gaussian pixel approximation; k >= 1: k×k box sub-samples per pixel

    @property
    def sim_pitch_m(self) -> float:
        return self.slm_pitch_m / self.upsample


def geometry_for(instrument: Dict[str, float], camera_shape, gray_patterns, *, upsample: int = 4,
                 pixel_subsamples: int = 3, distance_m: Optional[float] = None) -> Geometry:
    """A simulation window for a capture: it holds the largest pattern plus, on each side, the
    lateral reach ``z·λ/(2·slm_pitch)`` of its finest grating (two SLM pixels per period), and
    at least 1.3× the camera field in the SLM plane; the periodic (``pad=False``) window then
    keeps wrapped light off the camera. The size is a fast FFT length, a multiple of
    ``2·upsample``. ``upsample=2, pixel_subsamples=0`` is the coarse model of the distance
    search; ``4, 3`` the fine model (≈ 4× the cost)."""
    from optics.grid import fast_size

    slm, cam = float(instrument["slm_pitch_m"]), float(instrument["camera_pitch_m"])
    z = float(distance_m or instrument["distance_m"])
    lam = float(instrument["wavelength_m"])
    mag = float(instrument.get("magnification", 1.0))
    pat = max(max(np.shape(g)) for g in gray_patterns) * slm
    extent = max(pat + 2 * z * lam / (2 * slm), 1.3 * max(camera_shape) * cam / mag)
    sim_pitch = slm / upsample
    n = int(math.ceil(extent / sim_pitch))
    step = 2 * upsample
    while True:
        n = fast_size(n)
        if n % step == 0:
            break
        n += 1
    return Geometry(wavelength_m=lam, slm_pitch_m=slm, camera_pitch_m=cam, camera_shape=tuple(camera_shape),
                    upsample=upsample, sim_n=n, pixel_subsamples=pixel_subsamples)


def _gauss_tf(n: int, pitch_m: float, sigma_m) -> torch.Tensor:
    """Fourier transfer function ``exp(−2π²σ²f²)`` of a Gaussian of std ``σ`` (the camera pixel
    approximation of the coarse model; ``σ`` may be a tensor)."""
    f = torch.fft.fftfreq(n, d=pitch_m, dtype=torch.float64)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    return torch.exp(-2 * math.pi ** 2 * sigma_m ** 2 * f2)


class _GrayPatterns(nn.Module):
    """Integer gray levels per SLM pixel (``(P, n_slm, n_slm)`` buffer) shown through the SLM's
    LUT: :meth:`phase` is ``φ(g)`` by :meth:`optics.slm.PhaseLUT.gray_to_phase`, so a table
    substituted for (or fitted in) ``operator.slm.lut.levels_rad`` receives the gradient. The
    LUT is referenced, not registered: it has one home (the SLM) and one parameter path."""

    def __init__(self, gray: torch.Tensor, lut: PhaseLUT):
        super().__init__()
        self.register_buffer("gray", gray)
        self._lut = (lut,)

    def phase(self) -> torch.Tensor:
        return self._lut[0].gray_to_phase(self.gray)


def _requiring_grad(t: torch.Tensor) -> torch.Tensor:
    return t if t.requires_grad else t.detach().requires_grad_(True)


#: parameter paths of the optics modules inside :class:`NearFieldModel` (``torch.func.functional_call`` keys)
OPTICS_PATHS = {"distance_m": "operator.z_m", "crosstalk_sigma_m": "operator.slm.crosstalk_sigma_m",
                "lut_phase_rad": "operator.slm.lut.levels_rad"}


class NearFieldModel:
    """The forward model above for fixed gray patterns; :meth:`intensity` is differentiable in
    every geometric parameter (0-d float64 tensors) and in the LUT table.

    The SLM and the propagation are the optics layer's: an :class:`optics.slm.SLM`
    (``upsample`` samples per pixel, ``quantization="none"``: the gray patterns are shown
    through its :class:`~optics.slm.PhaseLUT` exactly, crosstalk ``σ`` its Gaussian phase blur)
    inside an :class:`optics.cdp.CDPSystem` (``method="asm"``, ``pad=False``, plane-wave object
    ``x = 1``) with the distance, crosstalk and LUT as fitted tensors (``fit=``). A call
    substitutes the values of ``p`` by :func:`torch.func.functional_call` at
    :data:`OPTICS_PATHS`. Calibration keeps only what optics does not model: the camera pixel
    integration and the similarity map onto the camera (:func:`torch.nn.functional.grid_sample`).
    """

    def __init__(self, geometry: Geometry, gray_patterns: Sequence[np.ndarray], lut_phase_rad: np.ndarray):
        self.g = geometry
        n, up = geometry.sim_n, geometry.upsample
        if n % up:
            raise FitError(f"simulation window {n} samples is not a multiple of upsample {up}; use geometry_for")
        n_slm = n // up
        lut_np = np.asarray(lut_phase_rad, dtype=np.float64)
        grays = []
        for gp in gray_patterns:
            gp = np.asarray(gp, dtype=np.int64)
            h, w = gp.shape
            if h > n_slm or w > n_slm:
                raise FitError(f"pattern {h}×{w} SLM pixels does not fit the {n_slm}×{n_slm}-pixel simulation "
                               f"window; raise sim_n")
            if gp.size and (gp.min() < 0 or gp.max() >= lut_np.size):
                raise FitError(f"gray levels {gp.min()} … {gp.max()} outside the {lut_np.size}-level LUT; check the "
                               f"capture's slm_bit_depth")
            gfull = torch.zeros((n_slm, n_slm), dtype=torch.int64)
            r0, c0 = n_slm // 2 - h // 2, n_slm // 2 - w // 2
            gfull[r0:r0 + h, c0:c0 + w] = torch.from_numpy(gp)
            grays.append(gfull)
        self.gray = torch.stack(grays)  # (P, n_slm, n_slm) gray levels per SLM pixel (0 outside the pattern)
        # a non-monotone start (a provisional fit) cannot build a PhaseLUT; any table is substituted per call
        start = lut_np if np.all(np.diff(lut_np) > 0) else np.arange(lut_np.size) * (2 * math.pi / lut_np.size)
        slm = SLM(pixel_pitch_m=geometry.slm_pitch_m, upsample=up, lut=PhaseLUT(start, learnable=True),
                  quantization="none", fit=("crosstalk_sigma_m", "lut"))
        self.system = CDPSystem(_GrayPatterns(self.gray, slm.lut), pitch_m=geometry.sim_pitch_m,
                                wavelength_m=geometry.wavelength_m, z_m=0.0, method="asm",
                                pad=False, slm=slm, fit=("z_m",))
        self.lut_phase_rad = torch.from_numpy(lut_np)
        self.x = torch.ones((n, n), dtype=torch.complex128)  # plane-wave illumination
        # shifts are relative to the pattern centre: with the optical axis at sample n//2 and an
        # even pattern centred on it, the pattern centre lies half a sample before the axis
        self.centre_m = -0.5 * geometry.sim_pitch_m
        H, W = geometry.camera_shape
        self.uy = (torch.arange(H, dtype=torch.float64) - H // 2) * geometry.camera_pitch_m
        self.ux = (torch.arange(W, dtype=torch.float64) - W // 2) * geometry.camera_pitch_m

    def field_intensity(self, p: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``|P_z{SLM(φ(g))}|²`` on the simulation grid, shape (P, n, n)."""
        lut = p.get("lut_phase_rad")
        values = {OPTICS_PATHS["distance_m"]: p["distance_m"],
                  OPTICS_PATHS["crosstalk_sigma_m"]: p["crosstalk_sigma_m"],
                  OPTICS_PATHS["lut_phase_rad"]: self.lut_phase_rad if lut is None else lut}
        grad = torch.is_grad_enabled() and any(isinstance(v, torch.Tensor) and v.requires_grad
                                               for v in values.values())
        # optics caches its kernels and modulation while nothing requires grad, keyed on tensor
        # identity and version; substituted temporaries (freed after each call) can reuse an
        # identity, so every value is handed over as a tensor that requires grad and the operator
        # rebuilds from the values themselves (the result is detached again unless the caller's values require grad)
        with torch.enable_grad():
            values = {k: _requiring_grad(torch.as_tensor(v, dtype=torch.float64)) for k, v in values.items()}
            out = functional_call(self.system, values, (self.x,), {"noise": None})
        return out if grad else out.detach()

    def intensity(self, p: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Unit-scale, zero-background camera image ``[G_pix ∗ I](T(u))``, shape (P, H, W).
        ``p["lut_phase_rad"]`` (a (2^b,) tensor), when present, replaces the fixed LUT."""
        g = self.g
        n, dx = g.sim_n, g.sim_pitch_m
        inten = self.field_intensity(p)
        mag = p["magnification"]
        k = g.pixel_subsamples
        if k == 0:
            pix = g.camera_pitch_m / mag / math.sqrt(12.0)
            inten = torch.fft.ifft2(torch.fft.fft2(inten) * _gauss_tf(n, dx, pix)).real
            uy, ux = self.uy, self.ux
        else:
            off = ((torch.arange(k, dtype=torch.float64) + 0.5) / k - 0.5) * g.camera_pitch_m
            uy = (self.uy[:, None] + off[None, :]).reshape(-1)
            ux = (self.ux[:, None] + off[None, :]).reshape(-1)
        UY, UX = torch.meshgrid(uy, ux, indexing="ij")
        c, s = torch.cos(p["rotation_rad"]), torch.sin(p["rotation_rad"])
        X = (c * UX - s * UY) / mag + p["shift_x_m"] + self.centre_m
        Y = (s * UX + c * UY) / mag + p["shift_y_m"] + self.centre_m
        gx = (X / dx + n // 2) / (n - 1) * 2 - 1
        gy = (Y / dx + n // 2) / (n - 1) * 2 - 1
        grid = torch.stack([gx, gy], -1)[None].expand(inten.shape[0], -1, -1, -1)
        out = F.grid_sample(inten[:, None], grid, mode="bilinear", align_corners=True)[:, 0]
        if k == 0:
            return out
        H, W = g.camera_shape
        return out.reshape(-1, H, k, W, k).mean(dim=(2, 4))


@dataclass
class FitResult:
    values: Dict[str, float]
    std: Dict[str, float]
    nominal: Dict[str, float]
    bounds: Dict[str, tuple]
    chi2_reduced: float
    pearson_r: List[float]
    residuals: np.ndarray          # normalised residual maps (P, H, W), NaN on masked pixels
    model_e: np.ndarray
    data_e: np.ndarray
    n_starts: int
    start_losses: List[tuple] = field(default_factory=list)   # (z start, loss after the short run)
    registration_quality: float = float("nan")
    fixed: tuple = ()
    std_jackknife: Dict[str, float] = field(default_factory=dict)   # filled by :func:`jackknife` when asked
    problems: List[str] = field(default_factory=list)               # failed checks (check=False keeps them here)
    lut: Dict[str, object] = field(default_factory=dict)            # joint LUT: phase_rad, phase_std_rad, …
    std_statistical: Dict[str, float] = field(default_factory=dict)  # cluster-robust / Jacobian 1σ (noise + local model error)
    std_model: Dict[str, float] = field(default_factory=dict)        # model-resolution 1σ (:func:`with_model_error`)
    n_clusters: int = 0                                              # clusters of the sandwich covariance

    def params(self) -> Dict[str, torch.Tensor]:
        return {k: torch.tensor(self.values[k], dtype=torch.float64) for k in PARAMS}


def _ls_scale(I: torch.Tensor, y: torch.Tensor, w: torch.Tensor):
    """Weighted LS of ``y ≈ a·I + b`` (closed form, differentiable in ``I``)."""
    sw = w.sum()
    mi, my = (w * I).sum() / sw, (w * y).sum() / sw
    a = (w * (I - mi) * (y - my)).sum() / (w * (I - mi) ** 2).sum().clamp_min(1e-300)
    return a, my - a * mi


class _LUTBlock:
    """The LUT as free parameters of the fit (joint refinement): the monotone Bernstein shape
    of :mod:`calibration.lut` plus the grating scale ``log C``; its residuals are the grating
    harmonics against ``C·M(φ(g); σ, z)`` with the fit's own crosstalk and distance."""

    def __init__(self, lut):
        from .lut import _bernstein
        if lut.theta is None:
            raise FitError("the LUT result carries no shape parameters; fit it with calibration.lut.fit_lut")
        self.degree = int(lut.degree)
        top = len(lut.gray) - 1
        self.B = _bernstein(torch.arange(top + 1, dtype=torch.float64) / top, self.degree)
        self.g = torch.as_tensor(np.asarray(lut.measured_gray), dtype=torch.float64).round().long()
        self.h = torch.as_tensor(np.asarray(lut.measured_h), dtype=torch.float64)
        self.hs = torch.as_tensor(np.asarray(lut.measured_h_std), dtype=torch.float64)
        self.grating = lut.grating
        c = float(lut.scale_c)
        if self.grating:
            from .lut import grating_harmonic_model
            g_pi = float(grating_harmonic_model(torch.tensor([math.pi], dtype=torch.float64),
                                                sigma_m=torch.tensor(0.0, dtype=torch.float64),
                                                **self._gkw(self.grating["z_m"]))[0])
            c = c / g_pi
        self.q0 = torch.cat([torch.as_tensor(lut.theta, dtype=torch.float64),
                             torch.tensor([math.log(c)], dtype=torch.float64)])
        self.n = self.q0.numel()

    def _gkw(self, z):
        gr = self.grating
        return {"z_m": z, "period_m": gr["period_m"], "wavelength_m": gr["wavelength_m"], "period_px": gr["period_px"]}

    def phi(self, q: torch.Tensor) -> torch.Tensor:
        from .lut import _phi_from_theta
        return _phi_from_theta(q[:self.degree], self.B)

    def residuals(self, q: torch.Tensor, p) -> torch.Tensor:
        phi = self.phi(q)[self.g]
        if self.grating:
            from .lut import grating_harmonic_model
            m = grating_harmonic_model(phi, sigma_m=p["crosstalk_sigma_m"], **self._gkw(p["distance_m"]))
        else:
            m = torch.sin(phi / 2) ** 2
        return (self.h - torch.exp(q[self.degree]) * m) / self.hs


class _Problem:
    def __init__(self, model: NearFieldModel, data_e: np.ndarray, read_noise_e: float, bounds, fixed, lut=None):
        self.model = model
        y = torch.as_tensor(data_e, dtype=torch.float64)
        self.mask = torch.isfinite(y)
        self.y = torch.where(self.mask, y, torch.zeros_like(y))
        self.rn2 = float(read_noise_e) ** 2
        self.bounds = bounds
        self.fixed = dict(fixed)
        self.free = [k for k in PARAMS if k not in self.fixed]
        self.lut = None if lut is None else _LUTBlock(lut)

    def to_params(self, q: torch.Tensor) -> Dict[str, torch.Tensor]:
        p = {}
        for i, k in enumerate(self.free):
            lo, hi = self.bounds[k]
            p[k] = lo + (hi - lo) * torch.sigmoid(q[i])
        for k, v in self.fixed.items():
            p[k] = torch.tensor(v, dtype=torch.float64)
        if self.lut is not None:
            ql = q[len(self.free):]
            p["lut_phase_rad"] = self.lut.phi(ql)
            p["_lut_q"] = ql
        return p

    def to_q(self, values: Dict[str, float]) -> torch.Tensor:
        q = []
        for k in self.free:
            lo, hi = self.bounds[k]
            t = min(max((values[k] - lo) / (hi - lo), 1e-6), 1 - 1e-6)
            q.append(math.log(t / (1 - t)))
        q = torch.tensor(q, dtype=torch.float64)
        if self.lut is not None:
            q = torch.cat([q, self.lut.q0])
        return q

    def residuals(self, p, a=None, b=None, w=None):
        I = self.model.intensity(p)
        m = self.mask
        if a is None:
            with torch.no_grad():
                a0, b0 = _ls_scale(I[m], self.y[m], torch.ones_like(I[m]))
                mu0 = (a0 * I + b0).clamp_min(0)
                w = 1.0 / (mu0 + self.rn2 + 1.0)
            a, b = _ls_scale(I[m], self.y[m], w[m])
        mu = a * I + b
        if w is None:
            w = 1.0 / (mu.detach().clamp_min(0) + self.rn2 + 1.0)
        r = (self.y - mu) * torch.sqrt(w)
        return torch.where(m, r, torch.zeros_like(r)), mu, a, b

    def loss(self, q, delta: float = 3.0):
        p = self.to_params(q)
        r, _, _, _ = self.residuals(p)
        L = F.huber_loss(r, torch.zeros_like(r), delta=delta, reduction="sum")
        if self.lut is not None:
            L = L + 0.5 * (self.lut.residuals(p["_lut_q"], p) ** 2).sum()
        return L / self.mask.sum()


def _run(prob: _Problem, q0: torch.Tensor, iters: int) -> tuple:
    """L-BFGS from ``q0``: ``(q, loss)``. A start where the loss is not finite is returned as it
    is (L-BFGS would step to NaN parameters, which the optics layer refuses with its own error), so
    that :func:`fit_parameters` can skip it or raise its :class:`FitError`."""
    with torch.no_grad():
        L0 = float(prob.loss(q0))
    if not math.isfinite(L0):
        return q0.detach().clone(), L0
    q = q0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([q], lr=1.0, max_iter=iters, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        L = prob.loss(q)
        L.backward()
        return L

    opt.step(closure)
    with torch.no_grad():
        L = float(prob.loss(q))
    return q.detach(), L


def _initial_geometry(model, data_e, z, nominal, bounds, min_quality):
    """Register the mean capture onto the simulation at distance ``z`` (nominal geometry)."""
    p = {k: torch.tensor(nominal[k], dtype=torch.float64) for k in PARAMS}
    p["distance_m"] = torch.tensor(z, dtype=torch.float64)
    with torch.no_grad():
        sim = model.intensity(p).numpy()
    best = None
    for i in range(min(sim.shape[0], 2)):  # two frames suffice for a starting point
        try:
            reg = register(data_e[i], sim[i], kind="similarity", min_quality=min_quality)
        except RegistrationError:
            continue
        if best is None or reg.quality > best.quality:
            best = reg
    vals = dict(nominal)
    vals["distance_m"] = z
    if best is None:
        return vals, float("nan")
    s, rot, (tx, ty) = best.centred(data_e.shape[-2:])
    # capture(u) ≈ sim_nominal(S(u)), sim_nominal(v) = I(v·p/M0) → M = M0/s, shift = t·p/M0
    g = model.g
    m0 = nominal["magnification"]
    cand = {"magnification": m0 / s, "rotation_rad": rot,
            "shift_x_m": tx * g.camera_pitch_m / m0, "shift_y_m": ty * g.camera_pitch_m / m0}
    for k, v in cand.items():
        lo, hi = bounds[k]
        if lo < v < hi:
            vals[k] = v
    return vals, best.quality


def fit_parameters(geometry: Geometry, gray_patterns: Sequence[np.ndarray], data_e: np.ndarray, *,
                   lut_phase_rad: np.ndarray, nominal: Dict[str, float], read_noise_e: float,
                   distance_range: float = 0.12, n_starts: int = 7, fit_crosstalk: bool = True,
                   bounds: Optional[Dict[str, tuple]] = None, start: Optional[Dict[str, float]] = None,
                   short_iters: int = 12, refine_iters: int = 150, n_refine: int = 2,
                   max_chi2: float = 1000.0, min_pearson: float = 0.8, min_registration: float = 0.3,
                   progress: bool = False, check: bool = True, joint_lut=None, tile_px: int = 8) -> FitResult:
    """Fit the forward model to ``data_e`` (P, H, W electrons; NaN = masked) for the patterns.

    ``nominal`` holds the starting values of :data:`PARAMS`; ``start`` (optional) skips the
    multistart and refines from the given values (used for the second pass after the LUT is
    refined). Returns a :class:`FitResult`; raises :class:`FitError` when the fit fails (with
    ``check=False`` the failed checks are returned in ``FitResult.problems`` instead — for an
    intermediate fit whose LUT is still provisional). ``joint_lut`` (a
    :class:`~calibration.lut.LUTResult` with its shape parameters) frees the LUT too: the
    random frames and the grating harmonics then constrain LUT, crosstalk and distance
    together, and ``FitResult.lut`` holds the refined table with its uncertainty. ``tile_px``:
    the tile side (camera pixels) of the clusters of the sandwich covariance (module docstring)."""
    with single_thread():
        return _fit_parameters(geometry, gray_patterns, data_e, lut_phase_rad=lut_phase_rad, nominal=nominal,
                               read_noise_e=read_noise_e, distance_range=distance_range, n_starts=n_starts,
                               fit_crosstalk=fit_crosstalk, bounds=bounds, start=start, short_iters=short_iters,
                               refine_iters=refine_iters, n_refine=n_refine, max_chi2=max_chi2,
                               min_pearson=min_pearson, min_registration=min_registration, progress=progress,
                               check=check, joint_lut=joint_lut, tile_px=tile_px)


def _clusters(mask: torch.Tensor, tile_px: int) -> torch.Tensor:
    """Cluster label of every unmasked pixel (in ``mask``'s flattening order): its frame and its
    ``tile_px × tile_px`` tile. Residual correlations (model error, speckle-sized) stay inside a
    tile; tiles of different frames are treated as independent."""
    P, H, W = mask.shape
    ny, nx = -(-H // tile_px), -(-W // tile_px)
    p, yy, xx = torch.nonzero(mask, as_tuple=True)
    return p * (ny * nx) + (yy // tile_px) * nx + xx // tile_px


def _cluster_covariance(J: torch.Tensor, r: torch.Tensor, bread: torch.Tensor, labels: torch.Tensor,
                        n_extra: int):
    """Cluster-robust ("sandwich") covariance ``B·(Σ_c g_c g_cᵀ)·B·G/(G − 1)`` with ``g_c = J_cᵀ r_c``
    the score of cluster ``c`` and ``B = (JᵀJ)⁻¹`` (Liang & Zeger, Biometrika 73, 13 (1986);
    Cameron & Miller, J. Human Resources 50, 317 (2015)). Unlike ``s²(JᵀJ)⁻¹`` it does not assume
    independent residuals: a model error that is correlated over a speckle or a tile, and differs
    between tiles and frames, widens it as it scatters the estimates. ``n_extra`` trailing rows
    (grating harmonics of a joint LUT) are clusters of their own. Returns ``(cov, G)``."""
    labels = torch.cat([labels, labels.max() + 1 + torch.arange(n_extra)]) if n_extra else labels
    _, inv = torch.unique(labels, return_inverse=True)
    G = int(inv.max()) + 1
    scores = torch.zeros((G, J.shape[1]), dtype=J.dtype).index_add_(0, inv, J * r[:, None])
    meat = scores.T @ scores
    return bread @ meat @ bread * (G / max(G - 1, 1)), G


def _fit_parameters(geometry, gray_patterns, data_e, *, lut_phase_rad, nominal, read_noise_e, distance_range,
                    n_starts, fit_crosstalk, bounds, start, short_iters, refine_iters, n_refine, max_chi2,
                    min_pearson, min_registration, progress, check=True, joint_lut=None, tile_px=8) -> FitResult:
    data_e = np.asarray(data_e, dtype=np.float64)
    if data_e.ndim != 3 or data_e.shape[0] != len(gray_patterns):
        raise FitError(f"data {data_e.shape} must be (P, H, W) with one frame per pattern ({len(gray_patterns)})")
    if tuple(data_e.shape[-2:]) != tuple(geometry.camera_shape):
        raise FitError(f"frames {data_e.shape[-2:]} do not match the camera shape {geometry.camera_shape}")
    good = np.isfinite(data_e)
    if good.mean() < 0.5:
        raise FitError(f"only {100 * good.mean():.1f} % of the pixels are usable (not defects or NaN); "
                       f"check the camera correction")
    z0 = float(nominal["distance_m"])
    m0 = float(nominal["magnification"])
    b = {"distance_m": (z0 * (1 - distance_range - 0.03), z0 * (1 + distance_range + 0.03)),
         "magnification": (0.85 * m0, 1.15 * m0), "rotation_rad": (-math.radians(8), math.radians(8)),
         "shift_x_m": (-60e-6, 60e-6), "shift_y_m": (-60e-6, 60e-6),
         "crosstalk_sigma_m": (0.0, float(geometry.slm_pitch_m))}
    b.update(bounds or {})
    fixed = {} if fit_crosstalk else {"crosstalk_sigma_m": float(nominal.get("crosstalk_sigma_m", 0.0))}
    model = NearFieldModel(geometry, gray_patterns, lut_phase_rad)
    prob = _Problem(model, data_e, read_noise_e, b, fixed, lut=joint_lut)
    starts: List[tuple] = []
    reg_q = float("nan")
    if start is None:
        zs = z0 * (1 + np.linspace(-distance_range, distance_range, n_starts))
        from tqdm.auto import tqdm
        for z in tqdm(zs, desc="fit: distance starts", disable=not progress, unit="start"):
            vals, q_reg = _initial_geometry(model, data_e, float(z), dict(nominal), b, min_registration)
            q, L = _run(prob, prob.to_q(vals), short_iters)
            starts.append((float(z), L, q, q_reg))
        starts.sort(key=lambda s: s[1])
        cands = starts[:n_refine]
    else:
        cands = [(float(start["distance_m"]), float("nan"), prob.to_q(start), float("nan"))]
    best = None
    for _z, _, q0, q_reg in cands:
        q, L = _run(prob, q0, refine_iters)
        if math.isfinite(L) and (best is None or L < best[1]):
            best = (q, L, q_reg)
    if best is None:
        raise FitError("the loss is not finite at any start; check the data (NaN frames?) and the nominal geometry")
    q, L, reg_q = best
    p = prob.to_params(q)
    with torch.no_grad():
        r, mu, a, bb = prob.residuals(p)
    values = {k: float(p[k]) for k in PARAMS}
    values["intensity_scale"] = float(a)
    values["background_e"] = float(bb)
    m = prob.mask
    nres = int(m.sum())
    n_par = len(prob.free) + 2 + (prob.lut.n if prob.lut is not None else 0)
    chi2 = float((r[m] ** 2).sum()) / max(nres - n_par, 1)
    # --- fit checks
    problems = []
    for k in prob.free:
        lo, hi = b[k]
        if k == "crosstalk_sigma_m" and values[k] < lo + 1e-3 * (hi - lo):
            continue  # no measurable crosstalk is a legitimate result at the lower bound
        if min(values[k] - lo, hi - values[k]) < 1e-3 * (hi - lo):
            problems.append(f"{k} = {values[k]:.6g} {UNITS[k]} ended on its bound [{lo:.6g}, {hi:.6g}]; widen the "
                            f"search (distance_range) or check the nominal value")
    # --- uncertainties: central-difference Jacobian of the weighted residuals (a, b free too;
    # with a joint LUT also its shape parameters and the grating scale)
    nl = prob.lut.n if prob.lut is not None else 0
    with torch.no_grad():
        w = 1.0 / (mu.clamp_min(0) + prob.rn2 + 1.0)
        keys = list(prob.free) + ["intensity_scale", "background_e"]
        scale = {"distance_m": 1e-3, "magnification": 1.0, "rotation_rad": 1.0, "shift_x_m": 1e-5, "shift_y_m": 1e-5,
                 "crosstalk_sigma_m": 1e-6, "intensity_scale": abs(values["intensity_scale"]), "background_e": 100.0}
        x0 = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        if nl:
            x0 = torch.cat([x0, p["_lut_q"].detach()])
        steps = [max(abs(values[k]), scale[k]) * 1e-4 for k in keys] + [1e-4] * nl

        def rvec(x):
            pp = {k: torch.tensor(values[k], dtype=torch.float64) for k in PARAMS}
            for i, k in enumerate(keys[:-2]):
                pp[k] = x[i]
            if nl:
                ql = x[len(keys):]
                pp["lut_phase_rad"] = prob.lut.phi(ql)
            rr, _, _, _ = prob.residuals(pp, a=x[len(keys) - 2], b=x[len(keys) - 1], w=w)
            out = rr[m]
            if nl:
                out = torch.cat([out, prob.lut.residuals(ql, pp)])
            return out

        cols = []
        for i, h in enumerate(steps):
            e_i = torch.zeros_like(x0)
            e_i[i] = h
            cols.append((rvec(x0 + e_i) - rvec(x0 - e_i)) / (2 * h))
        J = torch.stack(cols, 1)
        JTJ = J.T @ J
        d = torch.sqrt(torch.diag(JTJ))
        # a parameter without any effect (a LUT share or top saturated in its sigmoid) is held:
        # zero variance instead of inf·0; everything in column-normalised coordinates
        live = d > 1e-100
        d = torch.where(live, d, torch.ones_like(d))
        Jn = JTJ / d[:, None] / d[None, :]
        cond = float(torch.linalg.cond(Jn[live][:, live]))
        bread = torch.zeros_like(Jn)
        bread[torch.outer(live, live)] = torch.linalg.pinv(Jn[live][:, live], hermitian=True).reshape(-1)
        cov_jac = bread / d[:, None] / d[None, :] * max(chi2, 1.0)
        r_all = rvec(x0)
        cov_cl, n_clusters = _cluster_covariance(J / d, r_all, bread, _clusters(m, tile_px), r_all.numel() - int(m.sum()))
        cov_cl = cov_cl / d[:, None] / d[None, :]
        # per parameter the larger variance of the two: the cluster covariance plus, where the
        # Jacobian one is larger, the difference on the diagonal (positive semidefinite; the LUT
        # levels are propagated through it)
        cov = cov_cl + torch.diag((torch.diag(cov_jac) - torch.diag(cov_cl)).clamp_min(0))
    lut_out = {}
    if nl:
        ql = p["_lut_q"].detach()
        Jphi = torch.autograd.functional.jacobian(prob.lut.phi, ql)                     # (2^b, n_lut)
        cl = cov[len(keys):, len(keys):]
        with torch.no_grad():
            lut_out = {"phase_rad": prob.lut.phi(ql).numpy(),
                       "phase_std_rad": torch.sqrt(torch.einsum("ip,pq,iq->i", Jphi, cl, Jphi).clamp_min(0)).numpy(),
                       "scale_c": float(torch.exp(ql[-1])), "theta": ql[:-1].numpy().copy(),
                       "grating_chi2_reduced": float((prob.lut.residuals(ql, p) ** 2).sum()) / max(len(prob.lut.h) - nl, 1)}
    std = {k: float(math.sqrt(max(float(cov[i, i]), 0.0))) for i, k in enumerate(keys)}
    for k in fixed:
        std[k] = 0.0
    if cond > 1e12 and not nl:
        problems.append(f"the parameters are not identifiable from these frames (condition number {cond:.3g} of the "
                        f"normalised JᵀJ); use more or richer patterns, or fix crosstalk (fit_crosstalk=False)")
    if std["distance_m"] > 0.05 * values["distance_m"]:
        problems.append(f"distance uncertainty {std['distance_m']:.3g} m exceeds 5 % of {values['distance_m']:.6g} m")
    mu_np = mu.numpy()
    data = np.where(m.numpy(), prob.y.numpy(), np.nan)
    rs = [pearson(mu_np[i], data[i]) for i in range(mu_np.shape[0])]
    if min(rs) < min_pearson:
        problems.append(f"model/capture correlation r = {min(rs):.3g} < {min_pearson:g} for at least one frame; the "
                        f"model does not reproduce the captures (wrong LUT, patterns, or geometry far from nominal)")
    if chi2 > max_chi2:
        problems.append(f"reduced χ² = {chi2:.3g} exceeds {max_chi2:g}: residuals far above the noise")
    if problems and check:
        raise FitError("physical-parameter fit failed: " + "; ".join(problems))
    res_maps = np.where(m.numpy(), r.numpy(), np.nan)
    return FitResult(values=values, std=std, nominal=dict(nominal), bounds=b, chi2_reduced=chi2, pearson_r=rs,
                     residuals=res_maps, model_e=mu_np, data_e=data, n_starts=len(starts) or 1,
                     start_losses=[(s[0], s[1]) for s in starts], registration_quality=float(reg_q),
                     fixed=tuple(fixed), problems=problems, lut=lut_out, std_statistical=dict(std),
                     n_clusters=n_clusters)


def with_model_error(fine: FitResult, coarse: FitResult) -> FitResult:
    """``fine`` with uncertainties that include the model (discretisation) error: the same fit
    done on a model twice as coarse (``coarse``: twice the grid pitch, Gaussian instead of box
    pixel integration) differs by ``Δ = θ_fine − θ_coarse``; if the error of the fit shrinks at
    least linearly with the grid pitch (first-order convergence; bilinear sampling and the
    sampled crosstalk kernel are second order), the fine model's remaining error is at most
    ``|Δ|`` (Richardson's estimate ``|Δ|/(2^p − 1)`` with ``p >= 1``). So

        ``σ_model = |θ_fine − θ_coarse|``,  ``σ = sqrt(σ_statistical² + σ_model²)``

    for every parameter and, with a joint LUT, every LUT level; the intensity scale ``a`` gets at
    least ``σ_model(b)/Ī`` (the frame means fix ``a·Ī + b``, so a background error is a scale error).
    The values stay the fine fit's.
    Measured on independent benches (``benchmarks/calibration_coverage.py``) this covers the
    truth; for the crosstalk width and the background it is conservative (their errors are
    ≈ 0.3 ``|Δ|``). Returns a new :class:`FitResult`."""
    import dataclasses

    stat = dict(fine.std_statistical or fine.std)
    model = {k: abs(fine.values[k] - coarse.values[k]) if k in coarse.values and k not in fine.fixed else 0.0
             for k in fine.values}
    # the frame means pin a·Ī + b (Ī the mean unit-scale model intensity): a model error that moves
    # the background by δb moves the scale by −δb/Ī, even where the two models' scales agree
    a, b = fine.values["intensity_scale"], fine.values["background_e"]
    i_mean = (float(np.nanmean(fine.model_e)) - b) / a if a else float("nan")
    if math.isfinite(i_mean) and i_mean > 0:
        model["intensity_scale"] = max(model["intensity_scale"], model["background_e"] / i_mean)
    std = {k: math.hypot(stat.get(k, 0.0), model[k]) for k in fine.values}
    lut = dict(fine.lut)
    if fine.lut and coarse.lut:
        dl = np.abs(np.asarray(fine.lut["phase_rad"]) - np.asarray(coarse.lut["phase_rad"]))
        lut["phase_std_statistical_rad"] = np.asarray(fine.lut.get("phase_std_statistical_rad",
                                                                   fine.lut["phase_std_rad"]))
        lut["phase_std_model_rad"] = dl
        lut["phase_std_rad"] = np.hypot(lut["phase_std_statistical_rad"], dl)
    return dataclasses.replace(fine, std=std, std_statistical=stat, std_model=model, lut=lut)


def refined_lut(base, fit: FitResult):
    """The :class:`~calibration.lut.LUTResult` of a joint fit (``fit_parameters(joint_lut=base)``):
    the refined table and its uncertainty, the grating law at the fitted distance and crosstalk,
    the scale renormalised so that the result can seed the next joint fit."""
    import dataclasses

    if not fit.lut:
        raise FitError("this fit did not free the LUT (call fit_parameters with joint_lut=…)")
    grating = dict(base.grating) if base.grating else None
    c = float(fit.lut["scale_c"])
    extra = dict(base.extra, joint=1.0, crosstalk_sigma_m=fit.values["crosstalk_sigma_m"],
                 crosstalk_sigma_std_m=fit.std.get("crosstalk_sigma_m", float("nan")))
    if grating:
        from .lut import grating_harmonic_model
        grating.update(z_m=fit.values["distance_m"], sigma_m=fit.values["crosstalk_sigma_m"])
        g_pi = float(grating_harmonic_model(torch.tensor([math.pi], dtype=torch.float64),
                                            sigma_m=torch.tensor(0.0, dtype=torch.float64),
                                            **{k: grating[k] for k in ("z_m", "period_m", "wavelength_m",
                                                                       "period_px")})[0])
        c = c * g_pi
    phase = np.maximum.accumulate(np.asarray(fit.lut["phase_rad"])) + np.arange(len(base.gray)) * 1e-9
    return dataclasses.replace(base, phase_rad=phase, phase_std_rad=np.asarray(fit.lut["phase_std_rad"]),
                               scale_c=c, chi2_reduced=float(fit.lut["grating_chi2_reduced"]),
                               theta=np.asarray(fit.lut["theta"]), grating=grating, extra=extra)


def jackknife(geometry: Geometry, gray_patterns, data_e: np.ndarray, fit: FitResult, *, lut_phase_rad,
              read_noise_e: float, refine_iters: int = 20, progress: bool = False) -> Dict[str, float]:
    """Leave-one-frame-out standard errors ``sqrt((n−1)/n·Σ(θ_i − θ̄)²)`` (Efron & Tibshirani,
    *An Introduction to the Bootstrap* (1993), ch. 11): each refit starts from ``fit``'s values
    with one frame left out. Unlike the Jacobian errors (noise only) they also see the model
    error that differs from pattern to pattern."""
    n = len(gray_patterns)
    if n < 3:
        raise FitError(f"a jackknife over frames needs >= 3 fit frames, got {n}")
    from tqdm.auto import tqdm

    vals = []
    for i in tqdm(range(n), desc="fit: jackknife", disable=not progress, unit="refit"):
        keep = [j for j in range(n) if j != i]
        r = fit_parameters(geometry, [gray_patterns[j] for j in keep], np.asarray(data_e)[keep],
                           lut_phase_rad=lut_phase_rad, nominal=fit.nominal, read_noise_e=read_noise_e,
                           start=fit.values, bounds=fit.bounds, refine_iters=refine_iters,
                           fit_crosstalk=not fit.fixed)
        vals.append(r.values)
    out = {}
    for k in vals[0]:
        v = np.array([x[k] for x in vals])
        out[k] = float(np.sqrt((n - 1) / n * np.sum((v - v.mean()) ** 2)))
    return out


def evaluate(geometry: Geometry, gray_patterns, data_e: np.ndarray, *, lut_phase_rad, values: Dict[str, float],
             read_noise_e: float) -> Dict[str, float]:
    """Reduced χ² and mean Pearson r of the model with ``values`` on (held-out) frames; the
    intensity scale and background are re-fitted by linear least squares (fair to every model)."""
    model = NearFieldModel(geometry, gray_patterns, lut_phase_rad)
    prob = _Problem(model, np.asarray(data_e, dtype=np.float64), read_noise_e, {}, {})
    p = {k: torch.tensor(float(values.get(k, 0.0)), dtype=torch.float64) for k in PARAMS}
    with torch.no_grad(), single_thread():
        r, mu, _, _ = prob.residuals(p)
    m = prob.mask
    data = np.where(m.numpy(), prob.y.numpy(), np.nan)
    return {"chi2_reduced": float((r[m] ** 2).sum()) / max(int(m.sum()) - 2, 1),
            "pearson_r": float(np.mean([pearson(mu[i].numpy(), data[i]) for i in range(mu.shape[0])]))}
