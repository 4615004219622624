"""Interoperability: phaseforge's CDP optics as `deepinv <https://deepinv.github.io>`_ physics.

Optional: ``pip install .[deepinv]`` (the base install does not need deepinv; importing this
module does not import it either — the functions do, and raise :class:`InteropError` naming
the install command when it is missing).

* :func:`to_deepinv` — a ``deepinv.physics.LinearPhysics`` whose ``A``/``A_adjoint`` are the
  operator's exact ``A``/``A_adjoint`` (any :class:`~optics.cdp.CDPOperator` or
  :class:`~optics.cdp.CDPSystem`: unit-free or physical, either detector order). deepinv's
  own tools then apply: ``adjointness_test``, ``compute_sqnorm``, ``A_dagger``, ``prox_l2``.
* :func:`to_deepinv_phase_retrieval` — a ``deepinv.physics.PhaseRetrieval`` ``y = N(|B x|²)``
  with that ``B``, so deepinv's phase-retrieval reconstructors (``model(y, physics)``:
  gradient descent or plug-and-play on ``deepinv.optim.L2``, spectral initialisation
  ``deepinv.optim.phase_retrieval.spectral_methods``) and losses run on phaseforge's optics.
* :func:`to_deepinv_noise` — an :class:`optics.noise.NoiseModel` as a
  ``deepinv.physics.NoiseModel`` (same draws for the same ``torch.Generator``).

deepinv images are ``(B, C, H, W)``; the operator maps ``(..., H, W)`` to ``(..., L, Mh, Mw)``,
so a ``(B, 1, H, W)`` batch gives ``(B, 1, L, Mh, Mw)`` measurements and back. Real inputs are
promoted to complex (phase retrieval objects are complex in general).
"""
from __future__ import annotations

from functools import lru_cache

from .errors import OpticsError

__all__ = ["InteropError", "to_deepinv", "to_deepinv_phase_retrieval", "to_deepinv_noise"]

INSTALL_HINT = "pip install .[deepinv]  (or: pip install deepinv)"


class InteropError(OpticsError):
    """An optional interop dependency is missing or an object cannot be adapted."""


def _deepinv():
    try:
        import deepinv
    except ImportError as exc:
        raise InteropError(f"the deepinv adapter needs deepinv, which is not installed (import failed: {exc}); "
                           f"install it with `{INSTALL_HINT}`") from exc
    return deepinv


@lru_cache(maxsize=1)
def _classes():
    """The adapter classes, defined once deepinv is importable (deepinv stays optional)."""
    dinv = _deepinv()
    from deepinv.physics import LinearPhysics, NoiseModel as DinvNoiseModel

    class CDPLinearPhysics(LinearPhysics):
        """``deepinv.physics.LinearPhysics`` view of a phaseforge CDP operator (``self.cdp``)."""

        def __init__(self, operator, noise_model=None):
            kw = {} if noise_model is None else {"noise_model": noise_model}
            super().__init__(img_size=(1,) + tuple(operator.in_shape), **kw)
            self.cdp = operator

        def A(self, x, **kwargs):
            return self.cdp.A(x)

        def A_adjoint(self, y, **kwargs):
            return self.cdp.A_adjoint(y)

    class PhaseforgeNoise(DinvNoiseModel):
        """``deepinv.physics.NoiseModel`` drawing from a phaseforge :class:`optics.noise.NoiseModel`."""

        def __init__(self, model, rng=None):
            super().__init__(rng=rng)
            self.model = model

        def forward(self, x, seed=None, **kwargs):
            self.rng_manual_seed(seed)
            return self.model.sample(x, generator=self.rng)

    return dinv, CDPLinearPhysics, PhaseforgeNoise


def _operator(operator):
    from .cdp import CDPOperator, CDPSystem

    if isinstance(operator, CDPSystem):
        return operator.operator
    if isinstance(operator, CDPOperator):
        return operator
    raise InteropError(f"to_deepinv adapts a phaseforge CDPOperator or CDPSystem, got {type(operator).__name__}")


def to_deepinv_noise(noise, *, rng=None):
    """An :class:`optics.noise.NoiseModel` as a ``deepinv.physics.NoiseModel``; ``rng`` (a
    ``torch.Generator``) makes deepinv's ``seed=`` arguments work."""
    from .noise import NoiseModel

    if not isinstance(noise, NoiseModel):
        raise InteropError(f"noise must be an optics.noise.NoiseModel (e.g. PrDeepNoise(9)), got {type(noise).__name__}")
    _, _, PhaseforgeNoise = _classes()
    return PhaseforgeNoise(noise, rng=rng)


def to_deepinv(operator, *, noise=None):
    """``deepinv.physics.LinearPhysics`` with ``A``, ``A_adjoint`` = the operator's (``noise``: an
    optional :class:`optics.noise.NoiseModel` on ``A x``, e.g. for a linear inverse problem)."""
    op = _operator(operator)
    _, CDPLinearPhysics, _ = _classes()
    return CDPLinearPhysics(op, None if noise is None else to_deepinv_noise(noise))


def to_deepinv_phase_retrieval(operator, *, noise=None):
    """``deepinv.physics.PhaseRetrieval`` ``y = N(|B x|²)`` with ``B`` = :func:`to_deepinv`
    (operator) and ``N`` the given :class:`optics.noise.NoiseModel`, or the system's own
    ``noise_model`` (:class:`~optics.cdp.CDPSystem` built with ``noise=``), or none."""
    _operator(operator)
    dinv, _, _ = _classes()
    if noise is None:
        noise = getattr(operator, "noise_model", None)
    kw = {} if noise is None else {"noise_model": to_deepinv_noise(noise)}
    return dinv.physics.PhaseRetrieval(to_deepinv(operator), **kw)
