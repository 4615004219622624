r"""Deep-unfolding phase retrieval: a classical warm start, then ``K`` learned stages.

:class:`UnfoldedReconstructor` is a reconstructor in the deepinv sense, ``model(y, physics)``,
for coded diffraction patterns ``y_l = |A_l x|²`` (intensities, batch axes leading, as the
classical solvers of :mod:`learning.solvers` take them). ``physics`` is any object with
``A(x)`` / ``A_adjoint(z)`` (:class:`learning.solvers.LinearOperator`; optional ``norm_sq`` =
``tr(AᴴA)/n``, else estimated once per call).

1. **Warm start** (no gradient; ``n_warm`` iterations): error reduction from the flat image
   scaled to the measured energy, ``x ← P_C(Aᴴ(√y ⊙ sgn(A x))/s)`` with ``s = tr(AᴴA)/n``
   (the exact ER/Gerchberg–Saxton projection whenever ``AᴴA = s·I``: unit-modulus masks with
   FFT or Fraunhofer propagation) and ``P_C`` the encoding's object constraint (real and
   non-negative for amplitude objects). Gradients do not flow through it: back-propagating
   through ~100 iterations costs memory ∝ ``n_warm`` and a warm start is a classical solver
   whose output the stages refine. Gradients to the operator's parameters (learnable masks)
   still flow through the ``K`` stages, which apply ``A`` and ``Aᴴ`` with the graph kept.
   With ``n_warm_tv`` > 0 the error reduction is followed by that many iterations of the
   training-free TV reconstructor (:func:`learning.solvers.tv`'s loop: the same projection, then
   the proximal map of ``λ·TV`` with ``λ = tv_weight_factor·σ_x``, ``σ_x = σ_b/√(2s)``), still
   without gradient — for a single snapshot (L = 1), where error reduction stagnates far from
   the object and five learned stages cannot make up for it.
2. **Noise level**: ``σ̂ = rms(√y − |A x_warm|)`` per sample, the amplitude residual of the warm
   start (no α or photon count needed at inference: the model reads the noise regime from the
   data, and :meth:`UnfoldedReconstructor.check_regime` refuses a σ̂ outside the trained range).
   A model built with ``noise_input=True`` takes the amplitude noise std ``σ_b`` (the std of
   ``√y − |Ax|``, known from the noise model, as the regularised solvers take it) as an input
   instead, ``model(y, physics, noise_std=σ_b)``: at L = 1 the warm start's residual measures
   its own misfit, not the noise.
3. **Stages** ``k = 1..K``: a physics step on the measured data through the exact operator,
   a relaxed amplitude projection with a learned step ``τ_k`` (initialised at ``tau_init``, 1 by
   default; a small ``tau_init`` with the TV warm start makes the untrained model the TV
   reconstructor itself, which training then improves on):

       ``x ← P_C(x + τ_k · Aᴴ(√y ⊙ sgn(A x) − A x)/s)``

   which is the gradient step of the amplitude loss ``½‖|A x| − √y‖²`` with step ``τ_k/s``
   (amplitude flow; Gaussian amplitude noise, which is what ``√(|Ax|² + σ|Ax|n)`` becomes to
   first order) and, at ``τ_k = 1``, the ER projection; then a learned residual denoiser
   ``x ← D_k(x, σ_k)`` with ``σ_k = e^{c_k} σ̂·√(L/s)`` (learned ``c_k``, initialised at 0).
   ``shared=True`` uses one denoiser for every stage (fewer weights), otherwise one per stage.

The denoiser :class:`ResidualUNetDenoiser` has the plug-and-play interface ``D(x, sigma)``
(``x`` real ``(B, C, H, W)``, ``sigma`` the noise std in ``x``'s units, a number or one per
sample): a :class:`~learning.networks.UNet` (no normalisation layers, so it is independent of
the batch) fed with ``x`` and a constant ``sigma`` map, whose zero-initialised output is added
to ``x``; any ``H×W`` works (reflect padding to a multiple of ``2^(depth−1)``, cropped back).
Everything is convolutional, so a model trained on 64² patches runs at 128² or 256².

Encodings (:mod:`learning.encoding`): ``"amplitude"`` (real non-negative objects; one channel;
the standard CDP benchmark), ``"phase"`` (unit modulus; two channels re/im, projected back to the
unit circle after each denoiser) and ``"complex"`` (two channels). ``normalize="none"`` works in
the operator's absolute units (the standard protocol, objects in ``[0, 1]``); ``"rms"`` first
rescales ``y`` so the object has unit RMS modulus (photon-unit measurements whose gain is not
known, as in :mod:`learning.systems`; exact for phase objects).

The output is a :class:`learning.systems.ReconOutput`: ``x`` complex ``(B, H, W)``, ``x0`` the
warm start, ``features`` the decoder features of the last stage's denoiser, plus ``sigma_hat``
and the per-stage iterates in ``stages``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .denoisers import Denoiser
from .encoding import ENCODINGS
from .errors import LearningError
from .networks import UNet

__all__ = ["UnfoldingError", "ResidualUNetDenoiser", "UnfoldedReconstructor", "NORMALIZATIONS",
           "warm_start", "amplitude_residual_rms", "relaxed_projection", "save_model", "load_model",
           "MODEL_FORMAT"]

NORMALIZATIONS = ("none", "rms")


class UnfoldingError(LearningError):
    """A deep-unfolding reconstructor misconfigured, or asked for a regime it was not trained for."""


# ----------------------------------------------------------------------------------------------
# the denoiser
# ----------------------------------------------------------------------------------------------
class ResidualUNetDenoiser(Denoiser):
    """``D(x, sigma) = x + UNet([x, sigma·1])`` (module docstring): a
    :class:`learning.denoisers.Denoiser`, so a trained one also runs in the plug-and-play solver
    (``solve(op, y, "pnp", denoiser=model.denoiser(0))``).

    ``channels``: image channels ``C`` of ``x``; ``widths``: the U-Net's channels per level.
    The U-Net's last convolution starts at zero, so an untrained denoiser is the identity.
    """

    differentiable = True  # a torch network: the solvers may unroll it with differentiable=True

    def __init__(self, channels: int = 1, widths: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if int(channels) < 1:
            raise UnfoldingError(f"denoiser channels must be >= 1, got {channels!r}")
        self.channels = int(channels)
        self.widths = [int(w) for w in widths]
        self.net = UNet(self.channels + 1, self.channels, self.widths, norm="none")
        self._mult = 2 ** (len(self.widths) - 1)

    def _sigma_map(self, x: torch.Tensor, sigma) -> torch.Tensor:
        b, _, h, w = x.shape
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if s.ndim == 0:
            s = s.expand(b)
        s = s.reshape(-1)
        if s.shape[0] != b:
            raise UnfoldingError(f"sigma has {s.shape[0]} values for a batch of {b}; pass one number "
                                 f"or one noise std per sample")
        return s.view(b, 1, 1, 1).expand(b, 1, h, w)

    def forward_features(self, x: torch.Tensor, sigma):
        """``(D(x, sigma), decoder features)``."""
        if x.ndim != 4 or x.shape[1] != self.channels or x.is_complex():
            raise UnfoldingError(f"the denoiser takes real x of shape (B, {self.channels}, H, W), got "
                                 f"{tuple(x.shape)} ({x.dtype})")
        h, w = x.shape[-2:]
        m = self._mult
        ph, pw = (-h) % m, (-w) % m
        inp = torch.cat([x, self._sigma_map(x, sigma)], dim=1)
        if ph or pw:
            mode = "reflect" if (ph < h and pw < w) else "replicate"
            inp = F.pad(inp, (0, pw, 0, ph), mode=mode)
        delta, feats = self.net(inp)
        return x + delta[..., :h, :w], feats

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        return self.forward_features(x, sigma)[0]


# ----------------------------------------------------------------------------------------------
# physics pieces (pure functions)
# ----------------------------------------------------------------------------------------------
def _sqrt0(y: torch.Tensor) -> torch.Tensor:
    """√y with a zero derivative at 0."""
    pos = y > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, y, torch.ones_like(y))), torch.zeros_like(y))


def _sgn(z: torch.Tensor) -> torch.Tensor:
    """``z/|z|`` (1 at 0, with a finite derivative)."""
    mag = z.abs()
    safe = torch.where(mag > 0, mag, torch.ones_like(mag))
    return torch.where(mag > 0, z / safe, torch.ones_like(z))


def _constrain(x: torch.Tensor, encoding: str, *, nonnegative: bool) -> torch.Tensor:
    if encoding == "amplitude":
        re = x.real.clamp_min(0.0) if nonnegative else x.real
        return torch.complex(re, torch.zeros_like(re))
    if encoding == "phase":
        return _sgn(x)
    return x


def relaxed_projection(physics, x: torch.Tensor, sqrt_y: torch.Tensor, *, tau, norm_sq: float
                       ) -> torch.Tensor:
    """``x + τ Aᴴ(√y ⊙ sgn(A x) − A x)/s`` (module docstring; ``τ`` a number or ``(B,)``)."""
    z = physics.A(x)
    g = physics.A_adjoint(sqrt_y.to(z.dtype) * _sgn(z) - z) / norm_sq
    t = tau.to(x.real.dtype) if isinstance(tau, torch.Tensor) else torch.as_tensor(
        tau, dtype=x.real.dtype, device=x.device)
    if t.ndim:
        t = t.view(-1, *([1] * (x.ndim - 1)))
    return x + t * g


def amplitude_residual_rms(physics, x: torch.Tensor, sqrt_y: torch.Tensor) -> torch.Tensor:
    """``rms(|A x| − √y)`` per sample (over masks and detector pixels)."""
    d = physics.A(x).abs() - sqrt_y
    return torch.sqrt((d * d).mean(dim=(-3, -2, -1)))


def warm_start(physics, y: torch.Tensor, *, n_iter: int, encoding: str = "amplitude",
               norm_sq: float, in_shape) -> torch.Tensor:
    """Error reduction from the flat image scaled to ``‖x‖² = Σy/s`` (module docstring), without
    gradient; complex ``(B, H, W)``."""
    h, w = int(in_shape[0]), int(in_shape[1])
    cdtype = torch.complex128 if y.dtype == torch.float64 else torch.complex64
    with torch.no_grad():
        sy = _sqrt0(y)
        level = torch.sqrt(y.sum(dim=(-3, -2, -1)) / (norm_sq * h * w))
        x = level[..., None, None].to(cdtype) * torch.ones(y.shape[:-3] + (h, w), dtype=cdtype,
                                                            device=y.device)
        for _ in range(int(n_iter)):
            x = _constrain(relaxed_projection(physics, x, sy, tau=1.0, norm_sq=norm_sq), encoding,
                           nonnegative=True)
        if encoding == "complex":
            from .systems import remove_global_phase
            x = remove_global_phase(x)
    return x


def tv_warm_start(physics, y: torch.Tensor, x: torch.Tensor, *, n_iter: int, weight_factor: float,
                  sigma_x: torch.Tensor, norm_sq: float) -> torch.Tensor:
    """``n_iter`` iterations of the TV reconstructor's loop from ``x`` (real non-negative
    objects): ``x ← max(prox_{λ TV}(A⁺(√y ⊙ sgn(A x))), 0)`` with ``λ = weight_factor·σ_x`` per
    sample (the loop of :func:`learning.solvers.tv`), without gradient; complex ``(B, H, W)``."""
    from .denoisers import TVDenoiser
    den = TVDenoiser(weight_factor=weight_factor)
    sig = sigma_x.reshape(-1).to(y.dtype)
    with torch.no_grad():
        sy = _sqrt0(y)
        for _ in range(int(n_iter)):
            v = relaxed_projection(physics, x, sy, tau=1.0, norm_sq=norm_sq).real
            c = den(v[:, None], sig)[:, 0]
            x = _constrain(torch.complex(c, torch.zeros_like(c)).to(x.dtype), "amplitude", nonnegative=True)
    return x


# ----------------------------------------------------------------------------------------------
# the reconstructor
# ----------------------------------------------------------------------------------------------
class UnfoldedReconstructor(nn.Module):
    """``model(y, physics)``: warm start + ``n_stages`` × (physics step, learned denoiser).

    Keyword arguments (module docstring): ``encoding``; ``n_stages`` (K); ``shared`` (one
    denoiser for all stages); ``widths`` (the denoisers' U-Net); ``n_warm`` (warm-start ER
    iterations); ``normalize`` (``"none"`` | ``"rms"``). ``sigma_range`` (set by training, saved
    in the state dict): the range of the noise estimate ``σ̂`` seen in training, used by
    :meth:`check_regime`.
    """

    def __init__(self, *, encoding: str = "amplitude", n_stages: int = 5, shared: bool = False,
                 widths: Sequence[int] = (16, 32, 64), n_warm: int = 100, normalize: str = "none",
                 n_warm_tv: int = 0, tv_weight_factor: float = 1.0, noise_input: bool = False,
                 tau_init: float = 1.0):
        super().__init__()
        if encoding not in ENCODINGS:
            raise UnfoldingError(f"encoding = {encoding!r} is not one of {ENCODINGS}")
        if normalize not in NORMALIZATIONS:
            raise UnfoldingError(f"normalize = {normalize!r} is not one of {NORMALIZATIONS}")
        if int(n_stages) < 1 or int(n_warm) < 0:
            raise UnfoldingError(f"n_stages must be >= 1 and n_warm >= 0, got n_stages = {n_stages}, "
                                 f"n_warm = {n_warm}")
        if int(n_warm_tv) < 0 or not (float(tv_weight_factor) > 0 and math.isfinite(float(tv_weight_factor))):
            raise UnfoldingError(f"n_warm_tv must be >= 0 and tv_weight_factor a positive number, got "
                                 f"{n_warm_tv} and {tv_weight_factor}")
        if int(n_warm_tv) and encoding != "amplitude":
            raise UnfoldingError(f"the TV warm start (n_warm_tv = {n_warm_tv}) is for real non-negative "
                                 f"(amplitude) objects; encoding {encoding!r} needs n_warm_tv = 0")
        if not (float(tau_init) > 0 and math.isfinite(float(tau_init))):
            raise UnfoldingError(f"tau_init must be a positive step, got {tau_init}")
        self.tau_init = float(tau_init)
        self.n_warm_tv = int(n_warm_tv)
        self.tv_weight_factor = float(tv_weight_factor)
        self.noise_input = bool(noise_input)
        self.encoding = encoding
        self.n_stages = int(n_stages)
        self.shared = bool(shared)
        self.n_warm = int(n_warm)
        self.normalize = normalize
        self.widths = [int(w) for w in widths]
        ch = 1 if encoding == "amplitude" else 2
        n_den = 0 if not self.widths else (1 if self.shared else self.n_stages)
        self.denoisers = nn.ModuleList([ResidualUNetDenoiser(ch, self.widths) for _ in range(n_den)])
        self.log_tau = nn.Parameter(torch.full((self.n_stages,), math.log(self.tau_init)))
        self.log_sigma_scale = nn.Parameter(torch.zeros(self.n_stages))
        self.register_buffer("sigma_range", torch.tensor([0.0, math.inf]))

    # ------------------------------------------------------------------------------------------
    @property
    def feature_channels(self) -> List[int]:
        return list(self.widths)

    def config(self) -> dict:
        """The constructor arguments (plain JSON)."""
        return {"encoding": self.encoding, "n_stages": self.n_stages, "shared": self.shared,
                "widths": list(self.widths), "n_warm": self.n_warm, "normalize": self.normalize,
                "n_warm_tv": self.n_warm_tv, "tv_weight_factor": self.tv_weight_factor,
                "noise_input": self.noise_input, "tau_init": self.tau_init}

    def denoiser(self, k: int) -> Optional[ResidualUNetDenoiser]:
        """Stage ``k``'s denoiser (``None`` without a network: ``widths=[]``)."""
        if not len(self.denoisers):
            return None
        return self.denoisers[0 if self.shared else k]

    def _to_channels(self, x: torch.Tensor) -> torch.Tensor:
        if self.encoding == "amplitude":
            return x.real[:, None]
        return torch.stack([x.real, x.imag], dim=1)

    def _from_channels(self, c: torch.Tensor) -> torch.Tensor:
        if self.encoding == "amplitude":
            return torch.complex(c[:, 0], torch.zeros_like(c[:, 0]))
        z = torch.complex(c[:, 0], c[:, 1])
        return _sgn(z) if self.encoding == "phase" else z

    @staticmethod
    def _geometry(physics, y):
        if not (hasattr(physics, "A") and hasattr(physics, "A_adjoint")):
            raise UnfoldingError(f"physics {type(physics).__name__} lacks A(x)/A_adjoint(z); pass an "
                                 f"operator following learning.solvers.LinearOperator")
        if y.ndim != 4 or y.is_complex():
            raise UnfoldingError(f"y must be real intensities of shape (B, L, Mh, Mw), got "
                                 f"{tuple(y.shape)} ({y.dtype}); add the batch axis with y[None]")
        in_shape = getattr(physics, "in_shape", None)
        if in_shape is None:
            with torch.no_grad():
                cd = torch.complex128 if y.dtype == torch.float64 else torch.complex64
                in_shape = physics.A_adjoint(torch.zeros(y.shape[-3:], dtype=cd, device=y.device)).shape[-2:]
        s = getattr(physics, "norm_sq", None)
        if s is None:
            from .solvers import estimate_norm_sq
            cd = torch.complex128 if y.dtype == torch.float64 else torch.complex64
            s = estimate_norm_sq(physics, tuple(in_shape), dtype=cd, device=y.device)
        return (int(in_shape[0]), int(in_shape[1])), float(s() if callable(s) else s)

    def sigma_hat(self, y: torch.Tensor, physics) -> torch.Tensor:
        """The noise estimate ``σ̂`` the model would use on ``y`` (module docstring)."""
        y = self._normalized(y, physics)[0]
        in_shape, s = self._geometry(physics, y)
        x0 = warm_start(physics, y, n_iter=self.n_warm, encoding=self.encoding, norm_sq=s,
                        in_shape=in_shape)
        with torch.no_grad():
            return amplitude_residual_rms(physics, x0, _sqrt0(y))

    def _normalized(self, y, physics):
        if self.normalize == "none":
            return y, None
        in_shape, s = self._geometry(physics, y)
        g = (y.sum(dim=(-3, -2, -1)) / (s * in_shape[0] * in_shape[1])).detach().clamp_min(1e-30)
        return y / g[:, None, None, None], g

    def check_regime(self, sigma_hat: torch.Tensor, *, tolerance: float = 1.5) -> None:
        """Raise :class:`UnfoldingError` when a sample's ``σ̂`` lies outside the trained range
        widened by ``tolerance`` (a factor)."""
        lo, hi = (float(v) for v in self.sigma_range)
        if not math.isfinite(hi):
            return
        bad = [float(v) for v in sigma_hat.reshape(-1) if not (lo / tolerance <= float(v) <= hi * tolerance)]
        if bad:
            raise UnfoldingError(
                f"noise estimate σ̂ = {bad[0]:.4g} (amplitude residual of the warm start) is outside the "
                f"range this model was trained on, [{lo:.4g}, {hi:.4g}] (× {tolerance} either side); "
                f"retrain for this noise regime or use a classical solver (--solver er)")

    # ------------------------------------------------------------------------------------------
    def _noise_input(self, noise_std, y: torch.Tensor, gain) -> Optional[torch.Tensor]:
        if not self.noise_input:
            return None
        if noise_std is None:
            raise UnfoldingError("this model takes the amplitude noise std as an input (noise_input=True): "
                                 "call model(y, physics, noise_std=σ_b) with the std of √y − |Ax| from the "
                                 "noise model (phaseforge: give the noise section, e.g. --set noise.model=prdeep "
                                 "--set noise.alpha=27)")
        t = torch.as_tensor(noise_std, dtype=y.dtype, device=y.device).reshape(-1)
        if t.numel() not in (1, y.shape[0]) or not bool(torch.all(torch.isfinite(t) & (t >= 0))):
            raise UnfoldingError(f"noise_std must be one non-negative number or one per sample ({y.shape[0]}), "
                                 f"got {noise_std!r}")
        t = t.expand(y.shape[0]).clone()
        if gain is not None:  # the measurements were rescaled by 1/gain: amplitudes by 1/√gain
            t = t / torch.sqrt(gain)
        return t

    def forward(self, y: torch.Tensor, physics, *, check: bool = False, noise_std=None):
        """Reconstruct ``x`` from intensities ``y`` ``(B, L, Mh, Mw)`` (module docstring).
        ``check=True`` refuses a noise level outside the trained range (:meth:`check_regime`).
        ``noise_std``: the amplitude noise std σ_b (a number or one per sample), required by a
        model built with ``noise_input=True`` and ignored otherwise."""
        from .systems import ReconOutput

        y, gain = self._normalized(y, physics)
        in_shape, s = self._geometry(physics, y)
        given = self._noise_input(noise_std, y, gain)
        x = warm_start(physics, y, n_iter=self.n_warm, encoding=self.encoding, norm_sq=s,
                       in_shape=in_shape)
        sy = _sqrt0(y)
        with torch.no_grad():
            sig = amplitude_residual_rms(physics, x, sy) if given is None else given
        if self.n_warm_tv:
            x = tv_warm_start(physics, y, x, n_iter=self.n_warm_tv, weight_factor=self.tv_weight_factor,
                              sigma_x=sig / math.sqrt(2.0 * s), norm_sq=s)
        x0 = x
        if check:
            self.check_regime(sig)
        n_masks = int(getattr(physics, "n_masks", y.shape[-3]))
        sig_x = sig * math.sqrt(n_masks / s)
        stages = []
        feats: List[torch.Tensor] = []
        for k in range(self.n_stages):
            x = relaxed_projection(physics, x, sy, tau=torch.exp(self.log_tau[k]), norm_sq=s)
            x = _constrain(x, self.encoding, nonnegative=False)
            den = self.denoiser(k)
            if den is not None:
                c, feats = den.forward_features(self._to_channels(x), sig_x * torch.exp(self.log_sigma_scale[k]))
                x = self._from_channels(c)
            stages.append(x)
        out = ReconOutput(x=x, x0=x0, features=list(feats))
        out.sigma_hat = sig
        out.stages = stages
        out.gain = gain
        return out


# ----------------------------------------------------------------------------------------------
# the shipped file format
# ----------------------------------------------------------------------------------------------
MODEL_FORMAT = "phaseforge-unfolded-model"
MODEL_FORMAT_VERSION = 1


def _plain(obj, where="meta"):
    """Check that ``obj`` is plain JSON (what ``torch.load(weights_only=True)`` accepts safely)."""
    import json
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise UnfoldingError(f"{where} must be plain JSON (str, numbers, lists, dicts): {exc}") from exc


def save_model(model: UnfoldedReconstructor, path, meta: Optional[dict] = None):
    """Write ``model`` as ``{format, version, config, meta, state_dict}``: tensors and plain JSON
    only, so :func:`load_model` reads it with ``torch.load(weights_only=True)``; atomic."""
    from pathlib import Path

    from optics.fileio import atomic_path

    state = {"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION, "config": _plain(model.config(), "config"),
             "meta": _plain(meta or {}), "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}
    with atomic_path(path, keep_partial=False) as tmp:
        torch.save(state, tmp)
    return Path(path)


def check_protocol(meta: dict, *, operator, object_kind: str, noise: Optional[str]) -> None:
    """Refuse, naming every difference, measurements a shipped model was not trained for.

    ``meta["protocol"]`` (written by ``benchmarks/train_cdp_model.py``) against the measurements'
    ``operator`` (number of masks, unit-free FFT without oversampling), what the objects are
    (``object_kind``: ``"nonnegative"``/``"real"``/``"complex"``, or a dataset's encoding
    ``"amplitude"``/``"phase"``) and the noise (``noise``: the measurements' noise model name, or
    ``"sensor"`` for a simulated camera; None when unknown, which is not refused — the model's
    own noise-regime check still applies)."""
    proto = meta.get("protocol") or {}
    if not proto:
        raise UnfoldingError("the model file records no protocol (meta['protocol']); it cannot say what it was "
                             "trained for — retrain it with benchmarks/train_cdp_model.py")
    diffs = []
    L = getattr(operator, "n_masks", None)
    if proto.get("n_masks") is not None and L is not None and int(L) != int(proto["n_masks"]):
        diffs.append(f"{L} masks (trained for {proto['n_masks']})")
    if not getattr(operator, "unit_free", False):
        diffs.append(f"the physical propagator {getattr(operator, 'method', '?')!r} (trained for the unit-free "
                     f"unitary FFT, method 'fft')")
    if tuple(getattr(operator, "out_shape", ())) != tuple(getattr(operator, "in_shape", ())):
        diffs.append(f"oversampling (detector window {getattr(operator, 'out_shape', '?')} for objects "
                     f"{getattr(operator, 'in_shape', '?')}; trained for oversampling {proto.get('oversampling', 1)})")
    if proto.get("encoding") == "amplitude" and object_kind not in ("nonnegative", "real", "amplitude"):
        diffs.append(f"{object_kind} objects (trained for real non-negative ones: pass --object nonnegative)")
    if noise is not None and proto.get("noise", "").startswith("prdeep") and noise not in ("prdeep", "none"):
        diffs.append(f"noise {noise!r} (trained for prDeep amplitude noise)")
    if diffs:
        raise UnfoldingError(f"this model was trained for the standard CDP protocol ({proto.get('name', '?')}); "
                             f"these measurements differ: {'; '.join(diffs)}. Use a classical or regularised "
                             f"solver (--solver pnp), or train a model for them (benchmarks/train_cdp_model.py)")


def load_model(path, *, map_location="cpu"):
    """``(model in eval mode, meta)`` from a file written by :func:`save_model`."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        raise UnfoldingError(f"model file {p} does not exist; train one with "
                             f"python benchmarks/train_cdp_model.py --out RUN (writes RUN/model.pt)")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a foreign file
        raise UnfoldingError(f"{p} is not a readable weights-only torch file ({type(exc).__name__}: {exc}); "
                             f"re-export it with learning.unfolding.save_model") from exc
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise UnfoldingError(f"{p} is not a deep-unfolding model (format {MODEL_FORMAT!r} missing)")
    if state.get("version") != MODEL_FORMAT_VERSION:
        raise UnfoldingError(f"{p} has model format version {state.get('version')!r}; this code reads "
                             f"version {MODEL_FORMAT_VERSION}: retrain or use the matching phaseforge")
    model = UnfoldedReconstructor(**state["config"])
    model.load_state_dict(state["state_dict"])
    return model.eval(), state["meta"]
