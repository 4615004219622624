#!/usr/bin/env python
r"""The distillation experiment (issue 8): where does single-snapshot distillation beat E2E?

For every regime (a row of :data:`REGIMES`: one factor changed from the documented base, then
combinations) and every seed it trains, through ``phaseforge.learn.train_run`` (the same code as
``phaseforge train / distill``):

* ``teacher``        L = 4 continuous masks, wide U-Net (``data/configs/teacher.yaml``);
* ``e2e``            the student end to end (``student_e2e.yaml``: 1 mask on the SLM, small U-Net);
* ``kd``             the student under the frozen teacher, mask (spectrum, w 1) + feature (w 0.1)
                     losses — the paper's method (``student_distill.yaml`` with ``PAPER_KD``;
                     ``phaseforge distill``'s own default is the mask loss alone, ``kd_mask``);
* ``kd_mask``, ``kd_feature``  each distillation loss alone;
* ``fixed``          the student with a fixed random mask (``student_fixed_mask.yaml``);

and the stronger transfers of §3 (:data:`VARIANTS`, each with its own row): ``kd_gram`` (the
paper's Gram mask loss), ``kd_output`` (output distillation), ``kd_ct`` (from a teacher with the
student's SLM constraints but 4 snapshots, whose masks are implementable), ``kd_unlab`` (the
teacher's reconstructions of extra unlabelled objects as pseudo-labels,
``distill.unlabelled_weight``), ``kd_prog`` (progressive L = 4 → 2 → 1), and loss-weight sweeps
``kd_fw1`` (feature weight 1), ``kd_mw10`` (mask weight 10), ``kd_mask03`` / ``kd_mask3`` (the
default, mask loss alone, at w 0.3 and 3) and ``kd_bal`` (gradient-norm balancing).

Every run is evaluated on the same held-out test objects (the image source's *test* split, data
seed 0, never used in training or model selection), with the same exact-noise stream (object
``i`` always draws its noise from seed ``i``), from its best-validation checkpoint (model
selection on the *validation* split). Rows: the network, and the classical solvers (ER and
Wirtinger flow, ``classical_iters`` iterations each) with that run's own masks (for a student: its
single mask); a cached run evaluated before the WF row existed is re-evaluated, not retrained.
Metric: PSNR/SSIM of the encoded quantity as in ``phaseforge evaluate`` (identical for phase
objects), for amplitude and complex objects after the least-squares global gain
(:func:`gain_align`: the photon budget fixes no absolute scale; ``psnr_raw`` keeps the plain value).

Resumable: every run lives in ``OUT/runs/<config name>-<hash>/`` (a ``phaseforge`` run folder; the
hash is that of the resolved configuration and of its teacher's, so a teacher shared by several
regimes is trained once) and is finished when its ``eval.json`` exists; an interrupted run
resumes from ``checkpoints/last.pt``. Re-running skips finished runs; ``--list`` shows what is
done and missing. Report (``--report DIR``): ``distillation.csv``, ``distillation.json``,
``distillation.md`` (every row), ``distillation_summary.md`` (one line per regime: the README
table), ``distillation.png`` (KD − E2E per variant, every seed) and ``mask_gradients.png`` (norm
of the gradient reaching the mask phases over training, E2E vs KD). The report accumulates
sittings: the rows already in ``DIR/distillation.json`` (committed; the run cache under ``out/``
is not) are kept unless this sitting has as many or more seeds of the same row
(:func:`merge_previous`), and every row says when it was ``measured``.

    python benchmarks/distillation.py --quick                 # smoke run (tiny sizes), < 10 min
    python benchmarks/distillation.py --list                  # what is done / missing
    python benchmarks/distillation.py --regimes base no-unet --workers 2
    python benchmarks/distillation.py --regimes all           # the full sweep (hours; resumable)
    python benchmarks/distillation.py --report-only           # tables/figures from the cache

``--reconstructor unfolded`` (issue 17 §5) asks the same question with the deep-unfolding
reconstructor (``learning.unfolding``; :data:`UNFOLDED_MODEL`) for teacher and student: its own
cache ``out/distillation_unfolded``, report ``benchmarks/results/distillation_unfolded`` (plus
``side_by_side.md``: both reconstructors' answers per regime), rows :data:`UNFOLDED_VARIANTS`,
regimes :data:`UNFOLDED_PRIORITY` (``base``, the standard CDP protocol at L = 1
``cdp-protocol-l1``, ``object-amplitude``), sizes ``SIZES["unfolded"]`` (64 steps per run), and
besides ER and WF the regularised classical rows TV and PnP-NLM with every run's own masks and
the network's margin over the best classical row per seed (issue 17 §3's single-snapshot goal:
student ≥ best classical on its own mask + 3 dB):

    python benchmarks/distillation.py --reconstructor unfolded --workers 1 --threads 1
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CONFIG_DIR = ROOT / "data" / "configs"
PI = math.pi

# ------------------------------------------------------------------------------------------------
# sizes
# ------------------------------------------------------------------------------------------------
#: run sizes (config overrides applied to every run, plus the evaluation sizes)
SIZES = {
    # ~1 min per student run on one core of the shared machine: 256 objects × 16 epochs = 256 steps
    "full": {"overrides": {"train.n_train": 256, "train.n_val": 32, "train.epochs": 16,
                           "train.batch_size": 16, "train.grad_norm_every": 4},
             "n_test": 64, "classical_iters": 200, "n_unlabelled": 512},
    # --reconstructor unfolded: "full" with 4 epochs (64 steps per run, teachers too; ¼ of the U-Net set's):
    # an unfolded student step costs ≈ 0.7 s and a teacher step ≈ 1.7 s on one core of the shared machine
    # (5 stages through the denoiser; the U-Net set ≈ 0.23 s), so the 45 runs of issue 17 §5 fit a 1.5 h sitting
    "unfolded": {"overrides": {"train.n_train": 256, "train.n_val": 32, "train.epochs": 4,
                               "train.batch_size": 16, "train.grad_norm_every": 4},
                 "n_test": 64, "classical_iters": 200, "n_unlabelled": 512},
    # smoke run: 16² objects, 3 epochs of 3 steps
    "quick": {"overrides": {"train.n_train": 48, "train.n_val": 16, "train.epochs": 3,
                            "train.batch_size": 16, "train.grad_norm_every": 1, "data.size": 16},
              "n_test": 16, "classical_iters": 30, "n_unlabelled": 32},
}

# ------------------------------------------------------------------------------------------------
# regimes (issue 8 §2): one factor at a time from the documented base, then combinations
# ------------------------------------------------------------------------------------------------
#: The base regime (what the shipped configs already say; listed here so that it is explicit):
#: 32² phase-only objects with phase in [0, π] from the embedded images, λ = 633 nm, 8 µm pitch,
#: Fraunhofer at z = 0.1 m with 2× oversampling, 100 photons per detector pixel (Poisson), teacher
#: L = 4 continuous masks + U-Net (24, 48, 96), student 1 mask on an SLM with 2× the simulation
#: pitch (16 µm), 4 phase levels, fill factor 1, no crosstalk, 5 unrolled ER steps + U-Net (12, 24, 48).
BASE_COMMON = {"optics.method": "fraunhofer", "optics.z_m": 0.1, "optics.oversampling": 2.0,
               "sensor.mean_photons": 100.0, "data.encoding": "phase", "data.phase_range_rad": [0.0, PI],
               "data.size": 32, "data.source": "embedded", "model.kind": "unet"}
#: ``model.kind: unet`` is pinned (teacher and student): every committed row was measured with the
#: unrolled-ER + U-Net reconstructor, which stopped being the default when the deep-unfolding one
#: arrived (issue 17). The model keys that arrived with it are left out of a pinned run's hash
#: (:func:`config_hash_text`), so cached runs keep their folders.
UNFOLDING_MODEL_KEYS = ("kind", "n_stages", "n_warm", "shared")


def config_hash_text(cfg) -> str:
    """The text a run's configuration hash is taken of: the resolved configuration, without the
    keys of :data:`UNFOLDING_MODEL_KEYS` when ``model.kind`` is ``unet``, and ``optics.detector_order``
    and the ``noise`` section at their defaults (the configuration such a run had before those keys
    existed)."""
    import yaml

    from phaseforge.config import to_dict
    from phaseforge.config import NoiseConfig
    d = to_dict(cfg)
    if d["model"].get("kind") == "unet":
        d["model"] = {k: v for k, v in d["model"].items() if k not in UNFOLDING_MODEL_KEYS}
        # keys that arrived with the standard CDP protocol (issue 16), at their defaults: the
        # configuration such a run had before they existed
        if d["optics"].get("detector_order") == "centered":
            d["optics"] = {k: v for k, v in d["optics"].items() if k != "detector_order"}
        if d.get("noise") == to_dict(NoiseConfig()):
            d = {k: v for k, v in d.items() if k != "noise"}
    return yaml.safe_dump(d, sort_keys=False)
#: ``--reconstructor``: which reconstructor teacher and student use. ``unet`` (default) is the
#: committed report (``benchmarks/results/distillation/``, pinned by ``BASE_COMMON``); ``unfolded``
#: asks the question again with the deep-unfolding reconstructor (issue 17 §5), in its own cache
#: and report folder (:data:`RECONSTRUCTOR_DIRS`).
RECONSTRUCTORS = ("unet", "unfolded")
RECONSTRUCTOR_DIRS = {"unet": "distillation", "unfolded": "distillation_unfolded"}
#: The deep-unfolding set's model keys (teacher and student; the U-Net widths stay those of the
#: configs, teacher (24, 48, 96) wider than the student's (12, 24, 48), as in the U-Net set).
#: ``n_warm`` = 50 ER iterations (no gradient) and ``n_stages`` = 5 learned stages with one shared
#: denoiser: the ``model`` defaults, i.e. the shipped benchmark model's architecture
#: (``data/models/cdp_unfolded_L4.pt``), which at 32² costs about as much per step as the U-Net
#: set's 5 unrolled ER steps + U-Net (measured: README "Does distillation help?").
UNFOLDED_MODEL = {"model.kind": "unfolded", "model.n_stages": 5, "model.n_warm": 50, "model.shared": True}
BASE_STUDENT = {"slm.pixel_pitch_m": 16e-6, "slm.bit_depth": 2, "slm.fill_factor": 1.0,
                "slm.crosstalk_sigma_m": 0.0, "model.widths": [12, 24, 48], "model.n_unrolled": 5}


def critical_distance_m(size: int = 32, oversampling: float = 2.0, pitch_m: float = 8e-6,
                        wavelength_m: float = 633e-9) -> float:
    """``z_c = N·dx²/λ`` on the padded grid ``N = size·oversampling``: the distance where the
    Fresnel transfer-function and impulse-response kernels are sampled equally well."""
    return size * oversampling * pitch_m ** 2 / wavelength_m


ZC = critical_distance_m()


@dataclass
class Regime:
    name: str
    factor: str
    doc: str
    common: Dict = field(default_factory=dict)    # teacher and student
    student: Dict = field(default_factory=dict)   # student only (SLM, reconstruction budget)
    requires_env: Optional[str] = None            # user data: the regime runs when this is set
    label_fraction: Optional[float] = None        # fewer labelled objects, same number of steps
    step_factor: int = 1                          # × the training steps of every run (teacher too)


REGIMES: List[Regime] = [
    Regime("base", "base", "the documented base (BASE_COMMON, BASE_STUDENT)"),
    # object
    Regime("object-amplitude", "object", "amplitude-only objects (real, non-negative)",
           {"data.encoding": "amplitude"}),
    Regime("object-complex", "object", "complex objects (amplitude and phase from two images)",
           {"data.encoding": "complex"}),
    # oversampling
    Regime("oversampling-1.5", "oversampling", "1.5× oversampled detector", {"optics.oversampling": 1.5}),
    Regime("oversampling-1", "oversampling", "no oversampling", {"optics.oversampling": 1.0}),
    # propagation
    Regime("near-field-0.5zc", "propagation", f"angular spectrum at 0.5 z_c = {0.5 * ZC:.3e} m",
           {"optics.method": "asm", "optics.z_m": 0.5 * ZC}),
    Regime("near-field-2zc", "propagation", f"angular spectrum at 2 z_c = {2 * ZC:.3e} m",
           {"optics.method": "asm", "optics.z_m": 2 * ZC}),
    # photons
    Regime("photons-1e4", "photons", "10⁴ photons per pixel", {"sensor.mean_photons": 1e4}),
    Regime("photons-10", "photons", "10 photons per pixel", {"sensor.mean_photons": 10.0}),
    # SLM (student only)
    Regime("slm-pitch-1x", "slm", "SLM pixel = simulation pitch", student={"slm.pixel_pitch_m": 8e-6}),
    Regime("slm-pitch-4x", "slm", "SLM pixel = 4× simulation pitch", student={"slm.pixel_pitch_m": 32e-6}),
    Regime("slm-levels-2", "slm", "binary phase (2 levels)", student={"slm.bit_depth": 1}),
    Regime("slm-levels-256", "slm", "256 phase levels", student={"slm.bit_depth": 8}),
    Regime("slm-ff0.9-crosstalk", "slm", "fill factor 0.9, crosstalk σ = 2 µm",
           student={"slm.fill_factor": 0.9, "slm.crosstalk_sigma_m": 2e-6}),
    # reconstruction budget (student only)
    Regime("unrolled-1", "budget", "1 unrolled ER step + U-Net", student={"model.n_unrolled": 1}),
    Regime("unrolled-20", "budget", "20 unrolled ER steps + U-Net", student={"model.n_unrolled": 20}),
    Regime("no-unet", "budget", "5 unrolled ER steps, no U-Net (published learned-pattern setting)",
           student={"model.widths": []}),
    # images
    Regime("size-64", "images", "64² objects", {"data.size": 64}),
    Regime("faces", "images", "faces only: the 100 faces of scikit-image's lfw_subset (embedded:faces)",
           {"data.source": "embedded:faces"}),
    Regime("labels-64", "data", "64 labelled training objects (¼), epochs ×4 (same steps): scarce labels",
           label_fraction=0.25),
    Regime("train-4x", "training", "4× the training steps of every run (1024 per student, teachers too): "
           "does the gap close or open with longer training?", step_factor=4),
    Regime("mnist", "images", "MNIST-like sparse images from a user IDX file (PHASEFORGE_MNIST_IDX)",
           requires_env="PHASEFORGE_MNIST_IDX"),
    # combinations the analysis of issue 8 points at (small fixed budget, non-negative objects,
    # few photons, coarse SLM)
    Regime("amp+no-unet", "combination", "amplitude objects, 5 unrolled ER steps, no U-Net",
           {"data.encoding": "amplitude"}, {"model.widths": []}),
    Regime("amp+no-unet+photons-10", "combination", "amplitude objects, no U-Net, 10 photons/pixel",
           {"data.encoding": "amplitude", "sensor.mean_photons": 10.0}, {"model.widths": []}),
    Regime("amp+unrolled-1+photons-10", "combination", "amplitude objects, 1 unrolled step + U-Net, 10 photons",
           {"data.encoding": "amplitude", "sensor.mean_photons": 10.0}, {"model.n_unrolled": 1}),
    Regime("no-unet+slm-4x-2levels", "combination", "no U-Net, SLM 4× pitch, 2 levels",
           student={"model.widths": [], "slm.pixel_pitch_m": 32e-6, "slm.bit_depth": 1}),
]
REGIME_NAMES = [r.name for r in REGIMES]
#: The standard CDP benchmark protocol (issue 16, ``benchmarks/cdp_benchmark.py``) at L = 1 for the
#: student: the unit-free operator ``A x = fft2(M ⊙ x, norm="ortho")`` (no oversampling, FFT detector
#: order), real non-negative amplitude objects in [0, 1], prDeep noise at α = 27 on ``|A x|²`` (no
#: camera); the teacher has L = 4 unconstrained learned masks, the student ONE mask on a 4-level SLM
#: whose pixel is one sample of the unit-free grid (``slm.pixel_pitch_m = optics.pitch_m``: with
#: ``method: fft`` only their ratio matters, ``optics.cdp.CDPOperator``). Objects from
#: ``embedded:nobench`` (the embedded images without any benchmark image, ``learning.images``), so no
#: image of the benchmark's test set is seen in training, validation or this regime's test split.
PROTOCOL_L1 = Regime(
    "cdp-protocol-l1", "protocol",
    "standard CDP protocol at L = 1: unit-free FFT, no oversampling, amplitude objects in [0, 1], prDeep "
    "α = 27, student SLM pixel = 1 sample, 4 levels; images without the benchmark's (embedded:nobench)",
    {"optics.method": "fft", "optics.oversampling": 1.0, "optics.detector_order": "fft", "sensor.enabled": False,
     "noise.model": "prdeep", "noise.alpha": 27.0, "data.encoding": "amplitude", "data.source": "embedded:nobench"},
    {"slm.pixel_pitch_m": 8e-6})
#: every regime per reconstructor (``cdp-protocol-l1`` is measured with the deep-unfolding one only:
#: the U-Net set's committed report keeps its 26 regimes)
REGIMES_BY_RECONSTRUCTOR = {"unet": REGIMES, "unfolded": REGIMES + [PROTOCOL_L1]}
#: what runs without --regimes: the base and the factors the issue's analysis points at
PRIORITY = ["base", "no-unet", "amp+no-unet+photons-10", "labels-64", "object-amplitude", "photons-10",
            "unrolled-1", "no-unet+slm-4x-2levels"]
#: what ``--reconstructor unfolded`` runs without --regimes (issue 17 §5), in this order
UNFOLDED_PRIORITY = ["base", "cdp-protocol-l1", "object-amplitude"]

# ------------------------------------------------------------------------------------------------
# variants (rows)
# ------------------------------------------------------------------------------------------------


@dataclass
class Variant:
    name: str
    doc: str
    config: str                              # YAML in data/configs
    overrides: Dict = field(default_factory=dict)
    teacher: Optional[str] = None            # variant whose run is the frozen teacher
    role: str = "student"                    # student | teacher (teacher: no student overrides)
    constrained: bool = False                # teacher with the student's SLM overrides
    needs_net: bool = False                  # needs a student U-Net (feature terms)
    hidden: bool = False                     # an intermediate run, not a row of its own
    transfer: bool = False                   # a §3 stronger transfer
    extra_labelled: bool = False             # + the unlabelled pool's objects, with ground truth
    step_factor: int = 1                     # × the number of training steps


NO_KD = {"distill.mask_weight": 0.0, "distill.feature_weight": 0.0, "distill.output_weight": 0.0}
#: the paper's losses (spectrum mask loss w 1 + feature loss w 0.1), pinned for every run (before
#: the variant's own overrides): ``phaseforge distill``'s default feature weight follows from this
#: benchmark (0 since its second sitting), and pinning keeps every row's meaning and every cached
#: run's configuration hash as they were measured
PAPER_KD = {"distill.mask_weight": 1.0, "distill.feature_weight": 0.1}
VARIANTS: List[Variant] = [
    Variant("teacher", "L = 4 continuous masks, U-Net (24, 48, 96)", "teacher.yaml", role="teacher"),
    Variant("e2e", "student end to end", "student_e2e.yaml"),
    Variant("kd", "student distilled: spectrum mask loss (w 1) + feature loss levels 0, 1 (w 0.1)",
            "student_distill.yaml", teacher="teacher"),
    Variant("kd_mask", "mask loss alone (spectrum, w 1)", "student_distill.yaml",
            {"distill.feature_weight": 0.0}, teacher="teacher"),
    Variant("kd_feature", "feature loss alone (levels 0, 1, w 0.1)", "student_distill.yaml",
            {"distill.mask_weight": 0.0}, teacher="teacher", needs_net=True),
    Variant("fixed", "student with a fixed random mask", "student_fixed_mask.yaml"),
    # §3: stronger transfers
    Variant("kd_gram", "the paper's Gram mask loss (w 1) + feature (w 0.1)", "student_distill.yaml",
            {"distill.mask_loss": "gram"}, teacher="teacher", transfer=True),
    Variant("kd_output", "output distillation alone (w 1)", "student_distill.yaml",
            dict(NO_KD, **{"distill.output_weight": 1.0}), teacher="teacher", transfer=True),
    Variant("teacher_constrained", "teacher with the student's SLM (pitch, levels) and L = 4: "
            "implementable masks", "teacher.yaml", role="teacher", constrained=True, hidden=True),
    Variant("kd_ct", "mask + feature from the constrained teacher", "student_distill.yaml",
            teacher="teacher_constrained", transfer=True),
    Variant("kd_unlab", "teacher reconstructions of extra unlabelled objects as pseudo-labels (w 1)",
            "student_distill.yaml", dict(NO_KD, **{"distill.unlabelled_weight": 1.0}),
            teacher="teacher", transfer=True),
    Variant("kd_unlab_all", "kd (mask + feature) plus the unlabelled pseudo-labels (w 1)", "student_distill.yaml",
            {"distill.unlabelled_weight": 1.0}, teacher="teacher", transfer=True),
    Variant("kd_unlab3", "weight sweep: unlabelled pseudo-labels alone, w 3", "student_distill.yaml",
            dict(NO_KD, **{"distill.unlabelled_weight": 3.0}), teacher="teacher", transfer=True),
    Variant("e2e_all", "control for kd_unlab: E2E with ground truth for the same extra objects "
            "(n_train + n_unlabelled labelled; epochs rounded up, so ≥ the same steps)", "student_e2e.yaml",
            extra_labelled=True),
    Variant("e2e_all_2x", "as e2e_all with twice the steps: at least as many sample passes as kd_unlab "
            "(which trains on a labelled and an unlabelled batch per step)", "student_e2e.yaml",
            extra_labelled=True, step_factor=2),
    Variant("prog_l2", "intermediate: L = 2 student distilled from the teacher", "student_distill.yaml",
            {"masks.n_masks": 2}, teacher="teacher", hidden=True),
    Variant("kd_prog", "progressive L = 4 → 2 → 1 (mask + feature at each stage)", "student_distill.yaml",
            teacher="prog_l2", transfer=True),
    Variant("kd_fw1", "weight sweep: feature weight 1 (mask 1)", "student_distill.yaml",
            {"distill.feature_weight": 1.0}, teacher="teacher", needs_net=True, transfer=True),
    Variant("kd_mw10", "weight sweep: mask weight 10 (feature 0.1)", "student_distill.yaml",
            {"distill.mask_weight": 10.0}, teacher="teacher", transfer=True),
    Variant("kd_mask03", "weight sweep of the default (mask loss alone): w 0.3", "student_distill.yaml",
            {"distill.feature_weight": 0.0, "distill.mask_weight": 0.3}, teacher="teacher", transfer=True),
    Variant("kd_mask3", "weight sweep of the default (mask loss alone): w 3", "student_distill.yaml",
            {"distill.feature_weight": 0.0, "distill.mask_weight": 3.0}, teacher="teacher", transfer=True),
    Variant("kd_bal", "mask + feature, each balanced to the recon term's mask-gradient norm after 50 steps",
            "student_distill.yaml", {"distill.balance": True}, teacher="teacher", transfer=True),
]
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}
ROW_VARIANTS = [v.name for v in VARIANTS if not v.hidden]
STUDENT_ROWS = [v for v in ROW_VARIANTS if VARIANT_BY_NAME[v].role == "student"]
DEFAULT_VARIANTS = ["teacher", "e2e", "kd", "kd_mask", "kd_feature", "fixed", "kd_ct", "kd_unlab", "kd_output"]
#: the rows of ``--reconstructor unfolded`` (issue 17 §5): E2E, the paper's losses, ``phaseforge
#: distill``'s default (``kd_mask``) and the best transfer of the U-Net sweep (``kd_unlab``)
UNFOLDED_VARIANTS = ["teacher", "e2e", "kd", "kd_mask", "kd_unlab"]
DEFAULT_SEEDS = [0, 1, 2]


class BenchmarkError(ValueError):
    """A request the benchmark cannot honour; the message names the fix."""


# ------------------------------------------------------------------------------------------------
# plan
# ------------------------------------------------------------------------------------------------
@dataclass
class Job:
    variant: str
    seed: int
    overrides: List[str]
    config: str
    teacher: Optional["Job"] = None
    key: str = ""
    folder: Optional[Path] = None
    na: Optional[str] = None                 # not applicable: why
    classical: tuple = ("er", "wf")          # the classical rows evaluated with the run's own masks

    def label(self) -> str:
        return f"{self.variant}-{self.key}"


def _ov(d: Dict) -> List[str]:
    return [f"{k}={json.dumps(v)}" for k, v in d.items()]


def _student_has_net(regime: Regime) -> bool:
    widths = dict(BASE_STUDENT, **regime.student).get("model.widths")
    return bool(widths)


def _regime_common(regime: Regime) -> Dict:
    common = dict(BASE_COMMON, **regime.common)
    if regime.requires_env:
        common["data.source"] = os.environ.get(regime.requires_env, "")
    return common


def make_job(regime: Regime, variant: str, seed: int, sizes: Dict, out: Path, memo: Dict,
             reconstructor: str = "unet") -> Job:
    """The run of ``variant`` in ``regime`` for ``seed`` (its teacher chain included), with the
    reconstructor ``reconstructor`` (:data:`RECONSTRUCTORS`) for teacher and student."""
    mk = (regime.name, variant, seed)
    if mk in memo:
        return memo[mk]
    if reconstructor not in RECONSTRUCTORS:
        raise BenchmarkError(f"--reconstructor {reconstructor!r} is not one of {RECONSTRUCTORS}")
    v = VARIANT_BY_NAME[variant]
    ov = dict(sizes["overrides"])
    ov.update(_regime_common(regime))
    if reconstructor == "unfolded":
        ov.update(UNFOLDED_MODEL)
    if regime.label_fraction:
        n0, b = ov["train.n_train"], ov["train.batch_size"]
        n = max(b, int(round(n0 * regime.label_fraction)))
        ov["train.n_train"] = n
        ov["train.epochs"] = max(1, int(round(ov["train.epochs"] * n0 / n)))
    if regime.step_factor != 1:
        ov["train.epochs"] = ov["train.epochs"] * regime.step_factor
    if v.role == "student" or v.constrained:
        student = dict(BASE_STUDENT, **regime.student)
        if v.constrained:  # the SLM constraints only: the teacher keeps its network and budget
            student = {k: val for k, val in student.items() if k.startswith("slm.")}
            ov["slm.enabled"] = True
            ov["slm.quantization"] = "ste"
        ov.update(student)
    ov.update(PAPER_KD)
    if v.overrides:
        ov.update(v.overrides)
    if v.extra_labelled:
        # the objects kd_unlab sees without labels (train split items n_train … n_train +
        # n_unlabelled, see phaseforge.learn) are added with their ground truth
        n0, e0 = ov["train.n_train"], ov["train.epochs"]
        ov["train.n_train"] = n0 + sizes["n_unlabelled"]
        ov["train.epochs"] = max(1, math.ceil(e0 * n0 / ov["train.n_train"]))
    if v.step_factor != 1:
        ov["train.epochs"] = ov["train.epochs"] * v.step_factor
    if ov.get("distill.unlabelled_weight", 0) > 0:
        ov["distill.n_unlabelled"] = sizes["n_unlabelled"]
    has_net = _student_has_net(regime)
    na = None
    if v.role == "student" and not has_net:
        ov["distill.feature_levels"] = []
        ov["distill.feature_weight"] = 0.0
        if v.needs_net:
            na = "the student has no network (no features to distil)"
    ov["seed"] = seed
    ov["masks.seed"] = seed
    teacher = make_job(regime, v.teacher, seed, sizes, out, memo, reconstructor) if v.teacher else None
    job = Job(variant, seed, _ov(ov), v.config, teacher, na=na, classical=CLASSICAL_BY_RECONSTRUCTOR[reconstructor])
    from phaseforge.config import load
    cfg = load(CONFIG_DIR / v.config, job.overrides)
    h = hashlib.sha1(config_hash_text(cfg).encode())
    if teacher is not None:
        h.update(teacher.key.encode())
    job.key = h.hexdigest()[:10]
    # named by configuration file and hash: identical runs (e.g. kd and kd_mask without a student
    # network, or one teacher shared by several regimes) share one folder and are trained once
    job.folder = out / "runs" / f"{Path(v.config).stem}-{job.key}"
    memo[mk] = job
    return job


def build_plan(regimes: Sequence[Regime], variants: Sequence[str], seeds: Sequence[int], sizes: Dict,
               out: Path, reconstructor: str = "unet") -> Dict:
    """``{(regime, variant, seed): Job}`` for the rows asked (teachers and intermediates included
    through the jobs' ``teacher`` links)."""
    memo: Dict = {}
    plan = {}
    for r in regimes:
        for v in variants:
            for s in seeds:
                plan[(r.name, v, s)] = make_job(r, v, s, sizes, out, memo, reconstructor)
    return plan


def _chain(job: Job) -> List[Job]:
    out = []
    while job is not None:
        out.append(job)
        job = job.teacher
    return out[::-1]


# ------------------------------------------------------------------------------------------------
# running one job
# ------------------------------------------------------------------------------------------------
def eval_key(sizes: Dict, classical: Optional[Sequence[str]] = None) -> Dict:
    """What a finished evaluation was made with (a run whose ``eval.json`` says otherwise is stale and
    re-evaluated, not retrained)."""
    classical = CLASSICAL if classical is None else classical
    key = {"n_test": sizes["n_test"], "classical_iters": sizes["classical_iters"], "noise_seed": 0,
           "data_seed": 0, "split": "test", "metric": "gain-aligned encoded PSNR v1"}
    if any(c in REGULARISED for c in classical):  # the regularised rows start from the ER row's estimate
        key["regularised"] = f"{'/'.join(c for c in classical if c in REGULARISED)} {REGULARISED_ITERS} it. from the ER row"
    return key


def job_status(job: Job, sizes: Dict) -> str:
    """``done`` | ``partial (epoch e/E)`` | ``stale`` | ``missing`` | ``n/a``."""
    if job.na:
        return "n/a"
    f = job.folder
    ev = f / "eval.json"
    if ev.is_file():
        try:
            if json.loads(ev.read_text()).get("eval_key") == eval_key(sizes, job.classical):
                return "done"
        except (OSError, ValueError):
            pass
        return "stale"
    val = f / "val.csv"
    if val.is_file():
        n = max(0, len(val.read_text().strip().splitlines()) - 1)
        return f"partial (epoch {n})"
    return "missing"


def _grad_series(folder: Path) -> Dict[str, List[float]]:
    p = folder / "history.csv"
    if not p.is_file():
        return {}
    rows = list(csv.DictReader(io.StringIO(p.read_text())))
    keys = [k for k in (rows[0] if rows else {}) if k.startswith("grad_mask_")]
    out: Dict[str, List[float]] = {"step": []}
    for k in keys:
        out[k[len("grad_mask_"):]] = []
    for r in rows:
        if not any(r.get(k) not in (None, "") for k in keys):
            continue
        out["step"].append(int(r["step"]))
        for k in keys:
            v = r.get(k)
            out[k[len("grad_mask_"):]].append(float(v) if v not in (None, "") else float("nan"))
    return out if keys else {}


def test_objects(job: Job, sizes: Dict):
    """The held-out test objects of the job's regime: the image source's test split with data
    seed 0 (the same objects for every variant and seed of a regime)."""
    from phaseforge.config import load
    from phaseforge.learn import load_objects
    cfg = load(CONFIG_DIR / job.config, job.overrides + ["seed=0"])
    return load_objects(cfg, "test", sizes["n_test"], "n_test")


def gain_align(x_hat, x, encoding: str):
    """The estimate with the least-squares global gain applied, per sample: for amplitude
    objects the real gain ``c = ⟨|x̂|, |x|⟩ / ‖x̂‖²`` on the amplitudes, for complex objects the
    complex gain ``c = ⟨x̂, x⟩ / ‖x̂‖²`` (which also fixes the global phase); phase objects are
    returned unchanged (a phase has no scale). Why: the sensor normalises the photon budget
    (``mean_photons``), so the absolute scale of an amplitude is not measurable; a reconstructor
    without a network (and the classical solver) returns unit RMS, a network learns the typical
    scale of the training objects. Aligning the gain compares the shapes for every row alike."""
    import torch
    if encoding == "phase":
        return x_hat
    xt = x.to(x_hat.dtype)
    if encoding == "amplitude":
        a, b = x_hat.abs(), xt.abs()
        c = (a * b).sum(dim=(-2, -1), keepdim=True) / (a * a).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
        return torch.complex(a * c, torch.zeros_like(a))
    num = (x_hat.conj() * xt).sum(dim=(-2, -1), keepdim=True)
    den = (x_hat.abs() ** 2).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    return x_hat * (num / den)


#: the classical solvers evaluated with every run's own masks
CLASSICAL = ("er", "wf")
#: ... and with ``--reconstructor unfolded`` also the regularised solvers that need no training
#: (``learning.solvers.regularised``: TV and plug-and-play with non-local means, the project's best
#: classical rows on the standard CDP benchmark), so that a student is compared with the best
#: classical solver on its own mask (issue 17 §3: student ≥ best classical + 3 dB)
REGULARISED = ("tv", "pnp")
CLASSICAL_BY_RECONSTRUCTOR = {"unet": CLASSICAL, "unfolded": CLASSICAL + REGULARISED}
#: iterations of the regularised rows: the solvers' defaults, as in ``benchmarks/cdp_benchmark.py``
#: (40 iterations after 50 error-reduction iterations from a spectral start)
REGULARISED_ITERS = 40


def _has_classical(job: Job) -> bool:
    """Whether a finished run's ``eval.json`` has every classical row (runs evaluated before
    Wirtinger flow was added are re-evaluated — not retrained — by the next sitting)."""
    try:
        rows = json.loads((job.folder / "eval.json").read_text()).get("rows", {})
    except (OSError, ValueError):
        return False
    return all(c in rows for c in job.classical)


def _finished(job: Job, sizes: Dict) -> bool:
    """Trained and evaluated with every row of this version (else the sweep runs it: training
    resumes or is skipped when done, evaluation is redone)."""
    return job_status(job, sizes) == "done" and _has_classical(job)


def classical_estimate(physics, y, solver: str, *, encoding: str, classical_iters: int, noise_model=None,
                       start=None):
    """A classical row's estimate from ``y`` with the system's own masks: ER and Wirtinger flow
    (``classical_iters`` iterations from the flat start, as the unrolled estimate) or a regularised
    solver (:data:`REGULARISED`: ``tv``, ``pnp`` with non-local means; their default settings,
    :data:`REGULARISED_ITERS` iterations) started from the ER row's estimate (``start``, else
    computed; rescaled to the measured energy ``‖x‖² = Σy/s``) — their own default start, ER from
    a spectral start, fails on a single CDP (measured 6–10 dB at L = 1 in ``base``: the top
    eigenvector of one CDP is a poor start, as for the unrolled estimate) — with realness +
    positivity for amplitude objects, and the known amplitude-noise level of ``noise_model`` (an
    ``optics.noise`` model: the standard protocol) as ``phaseforge reconstruct`` passes it; with a
    camera (photon counts) they estimate it from the start's residual."""
    from learning.systems import first_estimate
    if solver in CLASSICAL:
        return first_estimate(physics, y, solver=solver, n_iter=classical_iters, encoding=encoding)
    if solver not in REGULARISED:
        raise BenchmarkError(f"classical row {solver!r} is not one of {CLASSICAL + REGULARISED}")
    import torch
    from learning.solvers import estimate_norm_sq, solve
    if start is None:
        start = first_estimate(physics, y, solver="er", n_iter=classical_iters, encoding=encoding)
    op = physics.system
    h, w = op.in_shape
    sq = estimate_norm_sq(op, (h, w), dtype=start.dtype, device=y.device)
    x0 = start * torch.sqrt(y.sum(dim=(-3, -2, -1)) / (sq * h * w))[..., None, None].to(start.dtype)
    kw = dict(n_iter=REGULARISED_ITERS, tol=None, history=False, generator=0, x0=x0)
    if encoding == "amplitude":
        kw.update(real=True, nonnegative=True)
    if noise_model is not None:
        kw["amplitude_noise_std"] = math.sqrt(float(noise_model.amplitude_mse(y).mean()))
    if solver == "pnp":
        kw["denoiser"] = "nlm"
    return solve(physics.system, y, solver=solver, **kw).x


def evaluate_model(model, objects, *, encoding: str, phase_range_rad, classical_iters: int,
                   batch_size: int = 16, classical: Sequence[str] = CLASSICAL) -> Dict[str, Dict]:
    """The network and the classical solvers (:data:`CLASSICAL`: ER and Wirtinger flow,
    ``classical_iters`` iterations each from the same flat start as the unrolled estimate) on
    ``objects`` with exact sensor noise, object ``i`` from
    seed ``i`` (the stream of ``phaseforge evaluate --seed 0``: the same for every row).

    ``psnr``/``ssim``: after :func:`gain_align` (amplitude, complex) — the benchmark's metric;
    ``psnr_raw``: the encoded PSNR of ``phaseforge evaluate`` without gain alignment."""
    import torch
    from learning.metrics import relative_error, ssim_amplitude, ssim_phase
    from learning.systems import sample_generators
    from learning.training import encoded_psnr

    was = model.training
    model.eval()
    names = ("network",) + tuple(classical)
    acc = {k: {"psnr": [], "psnr_raw": [], "ssim": [], "rel_err": []} for k in names}
    with torch.no_grad():
        for i in range(0, objects.shape[0], batch_size):
            x = objects[i:i + batch_size]
            gens = sample_generators([i + j for j in range(x.shape[0])], device=x.device)
            y = model.physics.measure(x, noise="exact", generators=gens)
            est = {}
            for name in names:
                if name == "network":
                    xh = model.reconstructor(y, model.physics).x
                else:
                    xh = est[name] = classical_estimate(model.physics, y, name, encoding=encoding,
                                                        classical_iters=classical_iters, start=est.get("er"),
                                                        noise_model=getattr(model.physics, "noise", None))
                    if encoding == "phase":
                        xh = xh / xh.abs().clamp_min(1e-6)
                xg = gain_align(xh, x, encoding)
                a = acc[name]
                a["psnr_raw"] += encoded_psnr(xh, x, encoding, phase_range_rad).tolist()
                a["psnr"] += encoded_psnr(xg, x, encoding, phase_range_rad).tolist()
                if encoding == "phase":
                    a["ssim"] += ssim_phase(xg, x, data_range=abs(phase_range_rad[1] - phase_range_rad[0])).tolist()
                else:
                    a["ssim"] += ssim_amplitude(xg, x, data_range=1.0).tolist()
                a["rel_err"] += relative_error(xg, x).tolist()
    model.train(was)
    rows = {}
    for name, a in acc.items():
        st = {k: _stats(v) for k, v in a.items()}
        rows[name] = {"psnr_mean": st["psnr"]["mean"], "psnr_std": st["psnr"]["std"],
                      "psnr_raw_mean": st["psnr_raw"]["mean"], "ssim_mean": st["ssim"]["mean"],
                      "ssim_std": st["ssim"]["std"], "rel_err_mean": st["rel_err"]["mean"], "n": len(a["psnr"]),
                      "psnr": a["psnr"]}
    return rows


def run_job(job: Job, sizes: Dict, *, progress: bool = False, threads: int = 1) -> Dict:
    """Train (or resume) and evaluate one job whose teacher is finished; writes ``eval.json``."""
    import torch
    from optics.fileio import write_json, write_text
    from phaseforge.config import dump, load
    from phaseforge.learn import RunError, build_model, load_run, train_run

    torch.set_num_threads(int(threads))
    f = job.folder
    cfg = load(CONFIG_DIR / job.config, job.overrides)
    t0 = time.perf_counter()
    model = build_model(cfg)
    trainable = model.mask_parameters() or model.network_parameters()
    if not trainable:
        # nothing to learn (a fixed mask and no network): the system is evaluated as built
        f.mkdir(parents=True, exist_ok=True)
        write_text(f / "config.yaml", dump(cfg))
        summary = {"seconds": 0.0, "steps": 0, "best_val_psnr": None,
                   "note": "nothing to train (fixed mask, no network): evaluated as built"}
        write_json(f / "metrics.json", summary)
    else:
        teacher_run = job.teacher.folder if job.teacher is not None else None
        if (f / "metrics.json").is_file():
            summary = json.loads((f / "metrics.json").read_text())
        else:
            resume = (f / "checkpoints" / "last.pt").is_file()
            try:
                summary = train_run(cfg, f, resume=resume, overwrite=not resume, progress=progress,
                                    teacher_run=teacher_run)
            except RunError:
                if not resume:
                    raise
                # the cached checkpoint does not fit (config changed): start again
                summary = train_run(cfg, f, overwrite=True, progress=progress, teacher_run=teacher_run)
        _, model, _ = load_run(f, "best")
    objects = test_objects(job, sizes)
    rows = evaluate_model(model, objects, encoding=cfg.data.encoding,
                          phase_range_rad=tuple(cfg.data.phase_range_rad), classical_iters=sizes["classical_iters"],
                          classical=job.classical)
    result = {"eval_key": eval_key(sizes, job.classical), "variant": job.variant, "seed": job.seed, "config": job.config,
              "overrides": job.overrides, "teacher_run": None if job.teacher is None else str(job.teacher.folder),
              "n_masks": int(model.physics.n_masks), "train_seconds": float(summary.get("seconds") or 0.0),
              "steps": int(summary.get("steps") or 0), "best_val_psnr": summary.get("best_val_psnr"),
              "rows": rows, "grad_mask": _grad_series(f), "wall_seconds": time.perf_counter() - t0}
    write_json(f / "eval.json", result)
    return result


def _worker(args):
    job, sizes, threads = args
    t0 = time.perf_counter()
    try:
        run_job(job, sizes, progress=False, threads=threads)
        return job.label(), None, time.perf_counter() - t0
    except Exception as exc:  # noqa: BLE001 - reported per job, the sweep goes on
        return job.label(), f"{type(exc).__name__}: {exc}", time.perf_counter() - t0


def run_plan(plan: Dict, regimes: Sequence[Regime], sizes: Dict, *, workers: int = 1, threads: int = 1,
             progress: bool = True, log=print) -> Dict[str, str]:
    """Run every unfinished job, regime by regime (so an interrupted sweep leaves whole regimes),
    dependency level by level inside a regime (teachers first), ``workers`` jobs at a time.
    Returns ``{job label: error}`` for the jobs that failed."""
    from tqdm.auto import tqdm

    errors: Dict[str, str] = {}
    failed_keys = set()
    todo_all = {}
    for (rname, _, _), job in plan.items():
        for j in _chain(job):
            if j.na is None and not _finished(j, sizes):
                todo_all.setdefault(rname, {})[j.key] = j
    total = len({k for v in todo_all.values() for k in v})
    bar = tqdm(total=total, desc="distillation runs", unit="run", disable=not progress)
    pool = None
    if workers > 1 and total > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        for r in regimes:
            jobs = todo_all.get(r.name, {})
            while jobs:
                ready = [j for j in jobs.values()
                         if j.teacher is None or job_status(j.teacher, sizes) == "done"
                         or j.teacher.key in failed_keys]
                if not ready:
                    break
                for j in [j for j in ready if j.teacher is not None and j.teacher.key in failed_keys]:
                    errors[j.label()] = f"teacher {j.teacher.label()} failed"
                    failed_keys.add(j.key)
                    jobs.pop(j.key)
                    bar.update(1)
                ready = [j for j in ready if j.key in jobs]
                args = [(j, sizes, threads) for j in ready]
                results = pool.map(_worker, args) if pool is not None else map(_worker, args)
                for (label, err, sec), j in zip(results, ready):
                    jobs.pop(j.key)
                    bar.update(1)
                    if err:
                        errors[label] = err
                        failed_keys.add(j.key)
                        log(f"FAILED {r.name} {label}: {err}")
                    else:
                        log(f"done   {r.name} {label} ({sec:.0f} s)")
                # jobs shared with later regimes are finished now
                for other in todo_all.values():
                    for k in [k for k, jj in other.items() if _finished(jj, sizes)]:
                        other.pop(k)
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
    return errors


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _load_eval(job: Job, sizes: Dict) -> Optional[Dict]:
    if job_status(job, sizes) != "done":
        return None
    return json.loads((job.folder / "eval.json").read_text())


def _stats(vals: Sequence[float]) -> Dict:
    import statistics
    vals = [float(v) for v in vals]
    if not vals:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize_plan(plan: Dict, regimes: Sequence[Regime], variants: Sequence[str], seeds: Sequence[int],
                   sizes: Dict) -> List[Dict]:
    """One row per (regime, variant): mean ± std over the finished seeds, every seed, and for
    student variants the paired difference to ``e2e`` of the same seed."""
    rows = []
    for r in regimes:
        e2e = {s: _load_eval(plan[(r.name, "e2e", s)], sizes) if (r.name, "e2e", s) in plan else None
               for s in seeds}
        for v in variants:
            if VARIANT_BY_NAME[v].hidden:
                continue
            jobs = {s: plan[(r.name, v, s)] for s in seeds}
            na = next((j.na for j in jobs.values() if j.na), None)
            evs = {s: _load_eval(j, sizes) for s, j in jobs.items()}
            done = [s for s in seeds if evs[s] is not None]
            row = {"regime": r.name, "factor": r.factor, "variant": v, "seeds_done": len(done),
                   "seeds_asked": len(seeds), "status": "n/a" if na else
                   ("done" if len(done) == len(seeds) else ("NOT RUN" if not done else "incomplete")),
                   "note": na or ""}
            if done:
                net = [evs[s]["rows"]["network"] for s in done]
                er = [evs[s]["rows"]["er"] for s in done]
                for key, src in (("psnr", net), ("ssim", net), ("er_psnr", er)):
                    field_ = "psnr_mean" if key != "ssim" else "ssim_mean"
                    st = _stats([x[field_] for x in src])
                    row[f"{key}_mean"], row[f"{key}_std"] = st["mean"], st["std"]
                row["psnr_per_seed"] = {s: evs[s]["rows"]["network"]["psnr_mean"] for s in done}
                row["er_psnr_per_seed"] = {s: evs[s]["rows"]["er"]["psnr_mean"] for s in done}
                wf = [evs[s]["rows"]["wf"] for s in done if "wf" in evs[s]["rows"]]
                if len(wf) == len(done):  # Wirtinger flow on the run's own masks (every seed evaluated)
                    st = _stats([x["psnr_mean"] for x in wf])
                    row["wf_psnr_mean"], row["wf_psnr_std"] = st["mean"], st["std"]
                    row["wf_psnr_per_seed"] = {s: evs[s]["rows"]["wf"]["psnr_mean"] for s in done}
                if any(c in REGULARISED for c in jobs[done[0]].classical):
                    row.update(classical_summary(evs, done, jobs[done[0]].classical))
                row["train_seconds_mean"] = _stats([evs[s]["train_seconds"] for s in done])["mean"]
                # the validation PSNR of the selected checkpoint: what a choice of settings may use
                # (the test split must not)
                vals = [evs[s].get("best_val_psnr") for s in done]
                if all(v is not None for v in vals):
                    row["val_psnr_mean"] = _stats(vals)["mean"]
                row["n_masks"] = evs[done[0]]["n_masks"]
                # the paper's argument: how much gradient reaches the mask from each term
                # (median over the logged steps, then mean over seeds)
                terms = sorted({t for s in done for t in (evs[s].get("grad_mask") or {}) if t != "step"})
                for t in terms:
                    meds = []
                    for s in done:
                        vals = [x for x in (evs[s].get("grad_mask") or {}).get(t, []) if x == x]
                        if vals:
                            meds.append(sorted(vals)[len(vals) // 2])
                    if meds:
                        row[f"grad_{t}_median"] = _stats(meds)["mean"]
                if v in STUDENT_ROWS and v != "e2e":
                    paired = {s: evs[s]["rows"]["network"]["psnr_mean"] - e2e[s]["rows"]["network"]["psnr_mean"]
                              for s in done if e2e.get(s) is not None}
                    paired_er = {s: evs[s]["rows"]["er"]["psnr_mean"] - e2e[s]["rows"]["er"]["psnr_mean"]
                                 for s in done if e2e.get(s) is not None}
                    paired_val = [evs[s].get("best_val_psnr") - e2e[s].get("best_val_psnr") for s in done
                                  if e2e.get(s) is not None and evs[s].get("best_val_psnr") is not None
                                  and e2e[s].get("best_val_psnr") is not None]
                    if paired_val:
                        row["val_diff_vs_e2e_mean"] = _stats(paired_val)["mean"]
                    st = _stats(list(paired.values()))
                    row.update(diff_vs_e2e_per_seed=paired, diff_vs_e2e_mean=st["mean"],
                               diff_vs_e2e_min=st["min"], diff_vs_e2e_max=st["max"],
                               diff_vs_e2e_all_positive=bool(paired) and all(d > 0 for d in paired.values()),
                               er_diff_vs_e2e_mean=_stats(list(paired_er.values()))["mean"])
            rows.append(row)
    return rows


def classical_summary(evs: Dict, done: Sequence[int], classical: Sequence[str]) -> Dict:
    """The classical rows of a (regime, variant) with its own masks, per seed, and the network's
    margin over the best of them (issue 17 §3: a single-snapshot student ≥ the best classical
    solver on its own mask + 3 dB): ``<solver>_psnr_mean`` / ``_per_seed`` for the regularised
    solvers, ``best_classical_per_seed`` (the max over every classical row of that seed's run),
    ``best_classical_solver_per_seed`` and ``margin_vs_best_classical_*`` = network − best, per seed,
    mean, min, max."""
    out: Dict = {}
    for c in REGULARISED:
        if c in classical and all(c in evs[s]["rows"] for s in done):
            out[f"{c}_psnr_mean"] = _stats([evs[s]["rows"][c]["psnr_mean"] for s in done])["mean"]
            out[f"{c}_psnr_per_seed"] = {s: evs[s]["rows"][c]["psnr_mean"] for s in done}
    best, which, margin = {}, {}, {}
    for s in done:
        rows = evs[s]["rows"]
        cands = {c: rows[c]["psnr_mean"] for c in classical if c in rows}
        if not cands:
            continue
        w = max(cands, key=cands.get)
        best[s], which[s] = cands[w], w
        margin[s] = rows["network"]["psnr_mean"] - cands[w]
    if margin:
        st = _stats(list(margin.values()))
        out.update(best_classical_per_seed=best, best_classical_solver_per_seed=which,
                   best_classical_mean=_stats(list(best.values()))["mean"],
                   margin_vs_best_classical_per_seed=margin, margin_vs_best_classical_mean=st["mean"],
                   margin_vs_best_classical_min=st["min"], margin_vs_best_classical_max=st["max"])
    return out


def reproduce_command(regime: str, variant: str, seeds: Sequence[int], quick: bool, reconstructor: str = "unet") -> str:
    extra = " e2e" if variant in STUDENT_ROWS and variant != "e2e" else ""
    rec = "" if reconstructor == "unet" else f" --reconstructor {reconstructor}"
    return (f"python benchmarks/distillation.py{' --quick' if quick else ''}{rec} --regimes {regime} "
            f"--variants {variant}{extra} --seeds {' '.join(map(str, seeds))}")


def format_rows(rows: List[Dict]) -> str:
    def f(x, fmt="{:.2f}"):
        return "—" if x is None else fmt.format(x)

    head = (f"{'regime':<26} {'variant':<11} {'seeds':>5} {'PSNR dB':>14} {'SSIM':>13} {'ER w/ its masks':>15} "
            f"{'Δ vs E2E (mean [min, max]) per seed':<44} {'train s':>7}")
    lines = [head, "-" * len(head)]
    for r in rows:
        psnr = f"{f(r.get('psnr_mean'))} ± {f(r.get('psnr_std'))}" if r.get("psnr_mean") is not None else r["status"]
        ssim = f"{f(r.get('ssim_mean'), '{:.3f}')} ± {f(r.get('ssim_std'), '{:.3f}')}" if r.get("ssim_mean") is not None else ""
        diff = ""
        if r.get("diff_vs_e2e_mean") is not None:
            per = ", ".join(f"{d:+.2f}" for d in r["diff_vs_e2e_per_seed"].values())
            diff = f"{r['diff_vs_e2e_mean']:+.2f} [{r['diff_vs_e2e_min']:+.2f}, {r['diff_vs_e2e_max']:+.2f}] ({per})"
        if r["status"] == "n/a":
            psnr, diff = "n/a", r["note"]
        lines.append(f"{r['regime'][:26]:<26} {r['variant']:<11} {r['seeds_done']:>2}/{r['seeds_asked']:<2} "
                     f"{psnr:>14} {ssim:>13} {f(r.get('er_psnr_mean')):>15} {diff:<44} "
                     f"{f(r.get('train_seconds_mean'), '{:.0f}'):>7}")
    return "\n".join(lines)


def markdown_rows(rows: List[Dict]) -> str:
    """The README table: one line per (regime, variant), every seed of the paired difference."""
    def f(x, fmt="{:.2f}"):
        return "—" if x is None else fmt.format(x)

    out = ["| regime | variant | seeds | PSNR dB (mean ± std) | SSIM | ER with its mask dB | row − E2E dB: mean [min, max] | per seed | train s |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] == "n/a":
            out.append(f"| {r['regime']} | {r['variant']} | — | n/a: {r['note']} | | | | | |")
            continue
        if not r["seeds_done"]:
            note = f" ({r['note']})" if r.get("note") else ""
            out.append(f"| {r['regime']} | {r['variant']} | 0/{r['seeds_asked']} | NOT RUN{note} | | | | | |")
            continue
        d = per = ""
        if r.get("diff_vs_e2e_mean") is not None:
            d = f"{r['diff_vs_e2e_mean']:+.2f} [{r['diff_vs_e2e_min']:+.2f}, {r['diff_vs_e2e_max']:+.2f}]"
            per = ", ".join(f"{x:+.2f}" for x in r["diff_vs_e2e_per_seed"].values())
        out.append(f"| {r['regime']} | {r['variant']} | {r['seeds_done']}/{r['seeds_asked']} | "
                   f"{f(r.get('psnr_mean'))} ± {f(r.get('psnr_std'))} | {f(r.get('ssim_mean'), '{:.3f}')} | "
                   f"{f(r.get('er_psnr_mean'))} | {d} | {per} | {f(r.get('train_seconds_mean'), '{:.0f}')} |")
    return "\n".join(out)


#: the rows issue 8 §1 asks of every regime (shown as NOT RUN where missing)
CORE_VARIANTS = ["teacher", "e2e", "kd", "kd_mask", "kd_feature", "fixed"]


def _measured_utc(plan: Dict, row: Dict, sizes: Dict) -> Optional[str]:
    """When the row's runs finished: the newest ``eval.json`` of its seeds (UTC, minutes)."""
    import datetime
    times = []
    for (rn, v, _), job in plan.items():
        if rn == row["regime"] and v == row["variant"] and job_status(job, sizes) == "done":
            times.append((job.folder / "eval.json").stat().st_mtime)
    if not times:
        return None
    return datetime.datetime.fromtimestamp(max(times), datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def merge_previous(fresh: List[Dict], fresh_grads: Dict, previous: Optional[Dict], sizes: Dict,
                   seeds: Sequence[int], quick: bool, log=print, reconstructor: str = "unet"):
    """Rows of this sitting merged with the report of earlier sittings (``previous``: the
    report's JSON), so that a sweep run over several sittings (and machines: the run cache under
    ``out/`` is not kept, the report is committed) accumulates into one table.

    Per (regime, variant) the row with more finished seeds wins; on a tie this sitting's. A
    previous report made with other sizes, seeds or mode is not merged (its rows would not be
    comparable). Rows keep ``measured`` (when their runs finished)."""
    universe = REGIMES_BY_RECONSTRUCTOR[reconstructor]
    names = [r.name for r in universe]
    core = CORE_VARIANTS if reconstructor == "unet" else UNFOLDED_VARIANTS
    # the U-Net set lists every regime (NOT RUN where missing); the unfolded set its own (issue 17 §5)
    listed = names if reconstructor == "unet" else UNFOLDED_PRIORITY
    by = {(r["regime"], r["variant"]): r for r in fresh}
    grads = dict(fresh_grads)
    if previous:
        meta = previous.get("meta", {})
        if meta.get("sizes") != json.loads(json.dumps(sizes)) or list(meta.get("seeds", [])) != list(seeds) \
                or bool(meta.get("quick")) != bool(quick):
            log("previous report not merged: it was made with other sizes, seeds or mode")
        else:
            for old in previous.get("rows", []):
                k = (old["regime"], old["variant"])
                if k[0] not in names or k[1] not in ROW_VARIANTS:
                    continue
                new = by.get(k)
                if old.get("status") == "n/a":
                    by.setdefault(k, old)
                    continue
                if not old.get("seeds_done"):
                    continue
                if new is None or new.get("seeds_done", 0) < old["seeds_done"]:
                    old = dict(old)
                    old.setdefault("measured", "an earlier sitting")
                    # JSON turned the per-seed keys into strings
                    for key in [k2 for k2 in old if k2.endswith("_per_seed")]:
                        if isinstance(old.get(key), dict):
                            old[key] = {int(s): v for s, v in old[key].items()}
                    by[k] = old
                    # per row: a sitting with this regime's E2E but not its KD keeps KD's series
                    prev_g = previous.get("mask_gradients", {}).get(k[0], {}).get(k[1])
                    if k[1] in ("e2e", "kd") and prev_g and k[1] not in fresh_grads.get(k[0], {}):
                        grads[k[0]] = dict(grads.get(k[0], {}), **{k[1]: prev_g})
    # every regime of REGIMES in order: the rows with data (also incomplete ones), n/a rows, and
    # the core rows of §1 (NOT RUN where missing); other rows never run are left out
    rows = []
    for rg in universe:
        for v in ROW_VARIANTS:
            k = (rg.name, v)
            r = by.get(k)
            if r is not None and (r.get("seeds_done") or r["status"] == "n/a"):
                rows.append(r)
            elif v in core and rg.name in listed:
                rows.append(r or {"regime": rg.name, "factor": rg.factor, "variant": v, "seeds_done": 0,
                                  "seeds_asked": len(seeds), "status": "NOT RUN",
                                  "note": (f"needs user data: set {rg.requires_env}" if rg.requires_env else "")})
    return rows, grads


SUMMARY_VARIANTS = ["kd", "kd_mask", "kd_feature", "fixed", "kd_ct", "kd_unlab", "kd_output", "kd_unlab_all",
                    "e2e_all", "e2e_all_2x"]


def _delta_cell(r: Optional[Dict]) -> str:
    """A row's paired Δ vs E2E as a table cell: mean [min, max] over seeds, **bold** when every
    seed is positive, (k/n) when fewer seeds than asked; · not run, n/a not applicable."""
    if r is None:
        return "·"
    if r.get("status") == "n/a":
        return "n/a"
    if r.get("diff_vs_e2e_mean") is None:
        return "·"
    txt = f"{r['diff_vs_e2e_mean']:+.2f} [{r['diff_vs_e2e_min']:+.2f}, {r['diff_vs_e2e_max']:+.2f}]"
    if r["seeds_done"] != r["seeds_asked"]:
        txt += f" ({r['seeds_done']}/{r['seeds_asked']})"
    return f"**{txt}**" if r.get("diff_vs_e2e_all_positive") else txt


def summary_table(rows: List[Dict]) -> str:
    """One line per regime (the README table): teacher and E2E PSNR, the classical solver with
    E2E's mask, and every student row's paired Δ vs E2E, mean [min, max] over seeds; **bold**:
    every seed positive; · not run; n/a not applicable; (k/3) fewer seeds than asked."""
    by = {(r["regime"], r["variant"]): r for r in rows}

    def psnr(r):
        if r is None or not r.get("seeds_done"):
            return "·"
        return f"{r['psnr_mean']:.2f}" + ("" if r["seeds_done"] == r["seeds_asked"] else f" ({r['seeds_done']}/{r['seeds_asked']})")

    head = ["regime", "teacher", "E2E", "ER, E2E's mask", "WF, E2E's mask"] + SUMMARY_VARIANTS
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rg in REGIMES:
        e2e = by.get((rg.name, "e2e"))
        er = f"{e2e['er_psnr_mean']:.2f}" if e2e and e2e.get("seeds_done") else "·"
        wf = f"{e2e['wf_psnr_mean']:.2f}" if e2e and e2e.get("wf_psnr_mean") is not None else "·"
        cells = [f"`{rg.name}`", psnr(by.get((rg.name, "teacher"))), psnr(e2e), er, wf]
        cells += [_delta_cell(by.get((rg.name, v))) for v in SUMMARY_VARIANTS]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def across_regimes_table(rows: List[Dict]) -> str:
    """One line per student row over every regime where it was measured with all seeds: the
    mean paired Δ vs E2E over regimes (test, and validation — the split a choice of default
    settings may use), and in how many regimes every seed was positive / negative."""
    out = ["| row | regimes | mean Δ test dB | mean Δ validation dB | every seed > 0 | every seed < 0 "
           "| best regime (Δ test) | worst regime (Δ test) |",
           "|---|---|---|---|---|---|---|---|"]
    for v in [v for v in STUDENT_ROWS if v != "e2e"]:
        rs = [r for r in rows if r["variant"] == v and r.get("diff_vs_e2e_mean") is not None
              and r["seeds_done"] == r["seeds_asked"]]
        if not rs:
            continue
        vals = [r["val_diff_vs_e2e_mean"] for r in rs if r.get("val_diff_vs_e2e_mean") is not None]
        pos = [r["regime"] for r in rs if r.get("diff_vs_e2e_all_positive")]
        neg = [r["regime"] for r in rs if all(d < 0 for d in r["diff_vs_e2e_per_seed"].values())]
        best = max(rs, key=lambda r: r["diff_vs_e2e_mean"])
        worst = min(rs, key=lambda r: r["diff_vs_e2e_mean"])
        mv = f"{sum(vals) / len(vals):+.2f} ({len(vals)})" if vals else "—"
        out.append(f"| `{v}` | {len(rs)} | {sum(r['diff_vs_e2e_mean'] for r in rs) / len(rs):+.2f} | {mv} | "
                   f"{len(pos)} | {len(neg)} | {best['regime']} {best['diff_vs_e2e_mean']:+.2f} | "
                   f"{worst['regime']} {worst['diff_vs_e2e_mean']:+.2f} |")
    return "\n".join(out)


def sweep_table(rows: List[Dict]) -> str:
    """The rows outside the README table (weight sweeps and further transfers) in the regimes where
    any of them ran, next to ``kd`` and ``kd_mask`` of the same regimes: paired Δ vs E2E on test,
    mean [min, max] over seeds (**bold**: every seed positive), and in parentheses the paired Δ of
    the best-validation PSNR (the split a choice of settings may use; — where not recorded)."""
    extra = [v for v in STUDENT_ROWS if v != "e2e" and v not in SUMMARY_VARIANTS]
    by = {(r["regime"], r["variant"]): r for r in rows}
    done = lambda r: r is not None and r.get("diff_vs_e2e_mean") is not None  # noqa: E731
    regimes = [rg.name for rg in REGIMES if any(done(by.get((rg.name, v))) for v in extra)]
    if not regimes:
        return ""
    shown = ["kd", "kd_mask"] + [v for v in extra if any(done(by.get((g, v))) for g in regimes)]

    def cell(r):
        txt = _delta_cell(r)
        if not done(r) or r.get("status") == "n/a":
            return txt
        val = r.get("val_diff_vs_e2e_mean")
        return txt + (f" ({val:+.2f})" if val is not None else " (—)")

    out = ["| row | " + " | ".join(f"`{g}`" for g in regimes) + " |", "|---|" + "---|" * len(regimes)]
    for v in shown:
        out.append(f"| `{v}` | " + " | ".join(cell(by.get((g, v))) for g in regimes) + " |")
    return "\n".join(out)


def _margin_cell(r: Optional[Dict]) -> str:
    """The network's margin over the best classical row of the same run (own masks), mean [min, max]
    over seeds; **bold** when every seed reaches the issue-17 goal (+3 dB)."""
    if r is None or r.get("margin_vs_best_classical_mean") is None:
        return "·"
    txt = (f"{r['margin_vs_best_classical_mean']:+.2f} [{r['margin_vs_best_classical_min']:+.2f}, "
           f"{r['margin_vs_best_classical_max']:+.2f}]")
    return f"**{txt}**" if r["margin_vs_best_classical_min"] >= 3.0 else txt


def _per_seed(d: Optional[Dict], seeds: Sequence[int], fmt: str = "{:+.2f}") -> str:
    if not d:
        return "·"
    return ", ".join(fmt.format(d[s]) if s in d else "—" for s in seeds)


def unfolded_summary(rows: List[Dict], seeds: Sequence[int]) -> str:
    """The report of ``--reconstructor unfolded`` (issue 17 §5): per regime the teacher, E2E, the
    classical rows on E2E's own mask and the paired Δ of every transfer vs E2E (mean [min, max],
    **bold** every seed > 0); then per (regime, row) the network, the best classical row on that
    run's own masks and the margin over it, every seed (goal +3 dB for the students)."""
    by = {(r["regime"], r["variant"]): r for r in rows}
    regimes = list(dict.fromkeys(r["regime"] for r in rows if r.get("seeds_done")))
    kd_rows = [v for v in UNFOLDED_VARIANTS if v not in ("teacher", "e2e")]
    kd_rows += [v for v in STUDENT_ROWS if v not in kd_rows and v != "e2e" and any(by.get((g, v)) for g in regimes)]

    def f(r, key):
        return "·" if r is None or r.get(key) is None else f"{r[key]:.2f}"

    head = ["regime", "teacher", "E2E", "ER, E2E's mask", "WF", "TV", "PnP-NLM", "best classical", "E2E − best classical"]
    head += [f"Δ {v}" for v in kd_rows]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in regimes:
        e = by.get((g, "e2e"))
        cells = [f"`{g}`", f(by.get((g, "teacher")), "psnr_mean"), f(e, "psnr_mean"), f(e, "er_psnr_mean"),
                 f(e, "wf_psnr_mean"), f(e, "tv_psnr_mean"), f(e, "pnp_psnr_mean"), f(e, "best_classical_mean"),
                 _margin_cell(e)]
        cells += [_delta_cell(by.get((g, v))) for v in kd_rows]
        out.append("| " + " | ".join(cells) + " |")
    out += ["", "| regime | row | L | network dB (per seed) | best classical, own masks dB (per seed: solver) | "
            "network − best classical dB: mean [min, max] | per seed | Δ vs E2E per seed | train s |",
            "|---|---|---|---|---|---|---|---|---|"]
    for g in regimes:
        for v in UNFOLDED_VARIANTS + [x for x in kd_rows if x not in UNFOLDED_VARIANTS]:
            r = by.get((g, v))
            if r is None or not r.get("seeds_done"):
                continue
            best = r.get("best_classical_per_seed") or {}
            which = r.get("best_classical_solver_per_seed") or {}
            bc = ", ".join(f"{best[s]:.2f}: {which.get(s, '?')}" for s in seeds if s in best) or "·"
            net = f"{r['psnr_mean']:.2f} ({_per_seed(r.get('psnr_per_seed'), seeds, '{:.2f}')})"
            tr = r.get("train_seconds_mean")
            out.append(f"| `{g}` | {v} | {r.get('n_masks', '·')} | {net} | {bc} | {_margin_cell(r)} | "
                       f"{_per_seed(r.get('margin_vs_best_classical_per_seed'), seeds)} | "
                       f"{_per_seed(r.get('diff_vs_e2e_per_seed'), seeds)} | {'·' if tr is None else f'{tr:.0f}'} |")
    return "\n".join(out)


def side_by_side(unet_rows: List[Dict], unfolded_rows: List[Dict]) -> str:
    """Both reconstructors' answer to "does distillation help?" per regime (issue 17 §5): teacher,
    E2E, the best classical row on E2E's mask (U-Net set: max of ER and WF, the rows it measured;
    unfolded set: max of ER, WF, TV, PnP-NLM per seed) and the paired Δ of ``kd``, ``kd_mask``,
    ``kd_unlab`` vs E2E, mean [min, max] over seeds (**bold**: every seed > 0)."""
    sets = [("U-Net (5 unrolled ER + U-Net, 256 steps)", unet_rows),
            ("unfolded (ER 50 + 5 stages, shared denoiser, 64 steps)", unfolded_rows)]
    regimes = UNFOLDED_PRIORITY  # every regime of issue 17 §5 (· where a set has not measured it)
    head = ["regime", "reconstructor", "teacher", "E2E", "best classical, E2E's mask", "E2E − best classical",
            "Δ kd", "Δ kd_mask", "Δ kd_unlab"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in regimes:
        for name, rs in sets:
            by = {(r["regime"], r["variant"]): r for r in rs}
            e, t = by.get((g, "e2e")), by.get((g, "teacher"))
            if not (e and e.get("seeds_done")):
                out.append(f"| `{g}` | {name} | · | · | · | · | · | · | · |")
                continue
            if e.get("best_classical_mean") is None:  # the U-Net set measured ER and WF only
                per = [max(e["er_psnr_per_seed"][s], e.get("wf_psnr_per_seed", {}).get(s, -math.inf))
                       for s in e["er_psnr_per_seed"]]
                margin = [e["psnr_per_seed"][s] - b for s, b in zip(e["er_psnr_per_seed"], per)]
                bc = f"{sum(per) / len(per):.2f} (max ER, WF)"
                mc = f"{sum(margin) / len(margin):+.2f} [{min(margin):+.2f}, {max(margin):+.2f}]"
            else:
                bc = f"{e['best_classical_mean']:.2f} (max ER, WF, TV, PnP)"
                mc = _margin_cell(e)
            tp = "·" if not (t and t.get("seeds_done")) else f"{t['psnr_mean']:.2f}"
            cells = [f"`{g}`", name, tp, f"{e['psnr_mean']:.2f}", bc, mc]
            cells += [_delta_cell(by.get((g, v))) for v in ("kd", "kd_mask", "kd_unlab")]
            out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_report(plan: Dict, regimes: Sequence[Regime], variants: Sequence[str], seeds: Sequence[int],
                 sizes: Dict, report: Path, *, quick: bool, log=print, reconstructor: str = "unet") -> List[Dict]:
    """CSV + JSON + PNG of the finished runs (unfinished rows say so), merged with the rows of
    earlier sittings already in ``report`` (:func:`merge_previous`). With ``reconstructor``
    ``unfolded`` the rows also carry the regularised classical solvers and the margin over the best
    classical row (:func:`classical_summary`), the summary is :func:`unfolded_summary`, and
    ``side_by_side.md`` sets the U-Net set's answer (``benchmarks/results/distillation``) next to it."""
    from optics.fileio import write_json, write_text
    universe = REGIMES_BY_RECONSTRUCTOR[reconstructor]

    fresh = summarize_plan(plan, regimes, variants, seeds, sizes)
    for r in fresh:
        if r.get("seeds_done"):
            r["measured"] = _measured_utc(plan, r, sizes)
    report.mkdir(parents=True, exist_ok=True)
    prev_path = report / "distillation.json"
    previous = None
    if prev_path.is_file():
        try:
            previous = json.loads(prev_path.read_text())
        except ValueError:
            log(f"previous report {prev_path} is not valid JSON: not merged")
    rows, grads = merge_previous(fresh, _fresh_grads(plan, regimes, seeds, sizes), previous, sizes, seeds,
                                 quick, log=log, reconstructor=reconstructor)
    for r in rows:
        r["reproduce"] = reproduce_command(r["regime"], r["variant"], seeds, quick, reconstructor)
    reported = [rg.name for rg in universe if any(r["regime"] == rg.name and r.get("seeds_done") for r in rows)]
    meta = {"sizes": sizes, "seeds": list(seeds), "quick": quick, "base_common": BASE_COMMON,
            "base_student": BASE_STUDENT, "variants": {v.name: v.doc for v in VARIANTS},
            "regimes": {r.name: {"factor": r.factor, "doc": r.doc, "common": r.common, "student": r.student,
                                 "label_fraction": r.label_fraction, "step_factor": r.step_factor}
                        for r in universe},
            "regimes_reported": reported,
            "regimes_not_reported": [r.name for r in universe if r.name not in reported]}
    if reconstructor != "unet":
        meta.update(reconstructor=reconstructor, model=UNFOLDED_MODEL, classical=list(CLASSICAL_BY_RECONSTRUCTOR[reconstructor]),
                    regularised_iters=REGULARISED_ITERS)
    cols = ["regime", "factor", "variant", "status", "seeds_done", "seeds_asked", "n_masks", "psnr_mean",
            "psnr_std", "ssim_mean", "ssim_std", "er_psnr_mean", "er_psnr_std", "wf_psnr_mean", "wf_psnr_std", "diff_vs_e2e_mean",
            "diff_vs_e2e_min", "diff_vs_e2e_max", "diff_vs_e2e_all_positive", "diff_vs_e2e_per_seed",
            "psnr_per_seed", "er_diff_vs_e2e_mean", "train_seconds_mean", "grad_recon_median", "grad_mask_median",
            "grad_feature_median", "grad_output_median", "grad_unlabelled_median", "val_psnr_mean",
            "val_diff_vs_e2e_mean", "measured", "note", "reproduce"]
    if reconstructor != "unet":
        cols[cols.index("diff_vs_e2e_mean"):cols.index("diff_vs_e2e_mean")] = [
            "tv_psnr_mean", "pnp_psnr_mean", "best_classical_mean", "best_classical_solver_per_seed",
            "margin_vs_best_classical_mean", "margin_vs_best_classical_min", "margin_vs_best_classical_max",
            "margin_vs_best_classical_per_seed"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (json.dumps(r[k]) if isinstance(r.get(k), dict) else r.get(k, "")) for k in cols})
    write_text(report / "distillation.csv", buf.getvalue())
    write_json(report / "distillation.json", {"meta": meta, "rows": rows, "mask_gradients": grads})
    write_text(report / "distillation.txt", format_rows(rows) + "\n")
    write_text(report / "distillation.md", markdown_rows(rows) + "\n")
    if reconstructor != "unet":
        write_text(report / "distillation_summary.md", unfolded_summary(rows, seeds) + "\n")
        unet_json = ROOT / "benchmarks" / "results" / RECONSTRUCTOR_DIRS["unet"] / "distillation.json"
        unet_rows = json.loads(unet_json.read_text())["rows"] if unet_json.is_file() else []
        write_text(report / "side_by_side.md", side_by_side(unet_rows, rows) + "\n")
        _figures(rows, grads, [r for r in universe if any(x["regime"] == r.name and x.get("seeds_done") for x in rows)],
                 report)
        return rows
    sweep = sweep_table(rows)
    write_text(report / "distillation_summary.md", summary_table(rows) + "\n\n" + across_regimes_table(rows)
               + ("\n\n" + sweep if sweep else "") + "\n")
    _figures(rows, grads, [r for r in REGIMES if r.name in grads or any(x["regime"] == r.name and x.get("seeds_done") for x in rows)], report)
    return rows


def _fresh_grads(plan: Dict, regimes: Sequence[Regime], seeds: Sequence[int], sizes: Dict) -> Dict:
    """The mask-gradient series of the E2E and KD students of the plan, thinned to ≤ 33 points."""
    grads: Dict = {}
    for rg in regimes:
        for v in ("e2e", "kd"):
            for s in seeds:
                j = plan.get((rg.name, v, s))
                ev = _load_eval(j, sizes) if j is not None else None
                if ev and ev.get("grad_mask"):
                    g = ev["grad_mask"]  # thinned to ≤ 33 points per run (the run folder has all)
                    stride = max(1, len(g["step"]) // 32)
                    grads.setdefault(rg.name, {}).setdefault(v, {})[s] = {k: [float(f"{y:.3g}") for y in x[::stride]] for k, x in g.items()}
    return grads


def _figures(rows, grads, regimes, report: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optics.fileio import save_figure

    names = [r.name for r in regimes]
    kd_vars = [v for v in STUDENT_ROWS if v != "e2e"
               and any(x["variant"] == v and x.get("diff_vs_e2e_per_seed") for x in rows)]
    cmap = plt.get_cmap("tab20")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(names) + 2), 5.0))
    width = 0.8 / max(1, len(kd_vars))
    plotted = False
    for i, v in enumerate(kd_vars):
        for k, rn in enumerate(names):
            r = next((x for x in rows if x["regime"] == rn and x["variant"] == v), None)
            if not r or not r.get("diff_vs_e2e_per_seed"):
                continue
            xpos = k - 0.4 + width * (i + 0.5)
            d = list(r["diff_vs_e2e_per_seed"].values())
            ax.bar(xpos, r["diff_vs_e2e_mean"], width * 0.9, color=cmap(i % 20), alpha=0.8,
                   label=v if not any(l.get_label() == v for l in ax.patches) else None)
            ax.plot([xpos] * len(d), d, "k.", ms=3)
            plotted = True
    ax.axhline(0, color="k", lw=0.8)
    ax.axhline(1, color="g", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, fontsize=7, ha="right")
    ax.set_ylabel("PSNR − E2E (dB), paired per seed")
    ax.set_title("Does distillation help? bars: mean, dots: seeds, dashed: +1 dB goal", fontsize=9)
    if plotted:
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, ncol=max(1, len(uniq) // 2), loc="lower left")
    fig.tight_layout()
    save_figure(fig, report / "distillation.png", dpi=90)
    plt.close(fig)

    rg = [n for n in names if n in grads]
    ncol = min(4, max(1, len(rg)))
    nrow = max(1, math.ceil(len(rg) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(max(6.5, 3.4 * ncol), 2.9 * nrow + 0.4), squeeze=False)
    for a in axes.flat[len(rg):]:
        a.axis("off")
    for a, rn in zip(axes.flat, rg):
        for v, style in (("e2e", "-"), ("kd", "--")):
            for s, g in sorted(grads[rn].get(v, {}).items()):
                for ci, term in enumerate(("recon", "mask", "feature")):
                    if term in g and any(x == x for x in g[term]):
                        a.semilogy(g["step"], [max(x, 1e-12) for x in g[term]], style, color=f"C{ci}", lw=0.7,
                                   alpha=0.8, label=f"{v} {term}" if s == min(grads[rn][v]) else None)
        a.set_title(rn, fontsize=8)
        a.set_xlabel("step", fontsize=7)
        a.tick_params(labelsize=6)
        a.legend(fontsize=5)
    axes[0][0].set_ylabel("‖∂(w·term)/∂θ‖", fontsize=7)
    fig.suptitle("gradient reaching the student's mask phases\n(solid: E2E, dashed: KD; every seed)", fontsize=8)
    fig.tight_layout()
    save_figure(fig, report / "mask_gradients.png", dpi=60)
    plt.close(fig)


def list_status(plan: Dict, regimes: Sequence[Regime], variants: Sequence[str], seeds: Sequence[int],
                sizes: Dict) -> str:
    lines = [f"{'regime':<26} {'variant':<20} " + " ".join(f"{'seed ' + str(s):<18}" for s in seeds)]
    n_done = n_all = 0
    for r in regimes:
        shown = set()
        for v in variants:
            for j in _chain(plan[(r.name, v, seeds[0])]):
                if j.variant in shown:
                    continue
                shown.add(j.variant)
                st = []
                for s in seeds:
                    job = next(x for x in _chain(plan[(r.name, v, s)]) if x.variant == j.variant)
                    status = job_status(job, sizes)
                    st.append(status)
                    if status != "n/a":
                        n_all += 1
                        n_done += status == "done"
                lines.append(f"{r.name[:26]:<26} {j.variant:<20} " + " ".join(f"{x:<18}" for x in st))
    lines.append(f"{n_done}/{n_all} runs done")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: tiny sizes (16² objects, 4 steps)")
    p.add_argument("--out", type=Path, default=None,
                   help="cache folder (default out/distillation, quick: out/distillation-quick)")
    p.add_argument("--report", type=Path, default=None,
                   help="report folder (default benchmarks/results/distillation; quick: OUT/report)")
    p.add_argument("--regimes", nargs="+", default=None,
                   help=f"regime names, 'priority' (default: {' '.join(PRIORITY)}) or 'all'")
    p.add_argument("--variants", nargs="+", default=None,
                   help=f"rows (default: {' '.join(DEFAULT_VARIANTS)}; 'all' = {' '.join(ROW_VARIANTS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="seeds (default 0 1 2)")
    p.add_argument("--workers", type=int, default=1, help="runs in parallel (one torch thread each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--list", action="store_true", help="show what is done / missing and exit")
    p.add_argument("--report-only", action="store_true", help="write the report from the cache, train nothing")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--reconstructor", choices=RECONSTRUCTORS, default="unet",
                   help="teacher and student reconstructor: unet (default: the committed report) or unfolded "
                        "(deep unfolding, issue 17; cache out/distillation_unfolded, report "
                        "benchmarks/results/distillation_unfolded; default regimes "
                        f"{' '.join(UNFOLDED_PRIORITY)}, rows {' '.join(UNFOLDED_VARIANTS)})")
    return p.parse_args(argv)


def select_regimes(names: Optional[Sequence[str]], quick: bool, reconstructor: str = "unet") -> List[Regime]:
    universe = REGIMES_BY_RECONSTRUCTOR[reconstructor]
    priority = UNFOLDED_PRIORITY if reconstructor == "unfolded" else PRIORITY
    if not names:
        names = ["base"] if quick else priority
    if list(names) == ["all"]:
        return [r for r in universe if not r.requires_env or os.environ.get(r.requires_env)]
    if list(names) == ["priority"]:
        names = priority
    out = []
    by = {r.name: r for r in universe}
    for n in names:
        if n not in by:
            raise BenchmarkError(f"--regimes {n!r} is not a regime; choose from {[r.name for r in universe]} "
                                 f"(those of --reconstructor {reconstructor}), 'priority' or 'all'")
        r = by[n]
        if r.requires_env and not os.environ.get(r.requires_env):
            raise BenchmarkError(f"regime {n!r} needs user data: set {r.requires_env} to its path")
        out.append(r)
    return out


def select_variants(names: Optional[Sequence[str]], reconstructor: str = "unet") -> List[str]:
    if not names:
        return list(UNFOLDED_VARIANTS if reconstructor == "unfolded" else DEFAULT_VARIANTS)
    if list(names) == ["all"]:
        return list(ROW_VARIANTS)
    for n in names:
        if n not in ROW_VARIANTS:
            raise BenchmarkError(f"--variants {n!r} is not a row; choose from {ROW_VARIANTS} or 'all'")
    out = list(dict.fromkeys(names))
    if any(v in STUDENT_ROWS and v != "e2e" for v in out) and "e2e" not in out:
        out.insert(0, "e2e")  # the paired difference needs the E2E student of the same seed
    return out


def main(argv=None, *, sizes_override: Optional[Dict] = None) -> int:
    args = parse_args(argv)
    rec = args.reconstructor
    sizes = sizes_override or SIZES["quick" if args.quick else ("unfolded" if rec == "unfolded" else "full")]
    name = RECONSTRUCTOR_DIRS[rec]
    out = args.out or (ROOT / "out" / (f"{name}-quick" if args.quick else name))
    report = args.report or ((out / "report") if args.quick or sizes_override
                             else ROOT / "benchmarks" / "results" / name)
    regimes = select_regimes(args.regimes, args.quick, rec)
    variants = select_variants(args.variants, rec)
    seeds = args.seeds or list(DEFAULT_SEEDS)
    plan = build_plan(regimes, variants, seeds, sizes, out, rec)
    if args.list:
        print(list_status(plan, regimes, variants, seeds, sizes))
        prev = report / "distillation.json"
        if prev.is_file():
            try:
                rep = json.loads(prev.read_text()).get("meta", {})
                print(f"{prev} (rows of every sitting so far) reports: {' '.join(rep.get('regimes_reported', []))}")
            except ValueError:
                print(f"{prev} is not valid JSON")
        return 0
    t0 = time.perf_counter()
    errors = {}
    if not args.report_only:
        errors = run_plan(plan, regimes, sizes, workers=args.workers, threads=args.threads,
                          progress=not args.no_progress)
    rows = write_report(plan, regimes, variants, seeds, sizes, report, quick=args.quick, reconstructor=rec)
    print(format_rows(rows))
    print(f"report: {report}  ({time.perf_counter() - t0:.0f} s)")
    for k, e in errors.items():
        print(f"FAILED {k}: {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
