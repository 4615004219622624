"""The machinery of benchmarks/distillation.py on a tiny configuration (no long training):
cache, skip on re-run, resume of an interrupted run, --list, staleness, the paired report."""
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

TINY = {"overrides": {"train.n_train": 8, "train.n_val": 4, "train.epochs": 2, "train.batch_size": 4,
                      "train.grad_norm_every": 1, "data.size": 16},
        "n_test": 4, "classical_iters": 5, "n_unlabelled": 4}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("distillation_bench", ROOT / "benchmarks" / "distillation.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["distillation_bench"] = mod  # spawned workers pickle jobs by module name
    spec.loader.exec_module(mod)
    return mod


def _args(out, *extra):
    return ["--out", str(out), "--regimes", "base", "--variants", "kd", "fixed", "--seeds", "0",
            "--no-progress", *extra]


@pytest.fixture(scope="module")
def finished(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    assert bench.main(_args(out), sizes_override=TINY) == 0
    return out


def _plan(bench, out):
    regimes = bench.select_regimes(["base"], False)
    variants = bench.select_variants(["kd", "fixed"])
    return bench.build_plan(regimes, variants, [0], TINY, out), regimes, variants


def test_runs_cached_and_report_pairs_seeds(bench, finished):
    plan, regimes, variants = _plan(bench, finished)
    assert variants == ["e2e", "kd", "fixed"]  # KD rows pull in the E2E student they are paired with
    kd, e2e = plan[("base", "kd", 0)], plan[("base", "e2e", 0)]
    assert kd.teacher.variant == "teacher" and kd.teacher.folder.parent == finished / "runs"
    for j in (kd, kd.teacher, e2e, plan[("base", "fixed", 0)]):
        assert bench.job_status(j, TINY) == "done"
        ev = json.loads((j.folder / "eval.json").read_text())
        assert set(ev["rows"]) == {"network", "er", "wf"} and len(ev["rows"]["network"]["psnr"]) == TINY["n_test"]
    assert json.loads((kd.teacher.folder / "eval.json").read_text())["n_masks"] == 4
    # the mask-gradient series of the KD student has one entry per term and logged step (4 steps)
    g = json.loads((kd.folder / "eval.json").read_text())["grad_mask"]
    assert g["step"] == [0, 1, 2, 3] and {"recon", "mask", "feature"} <= set(g)
    rep = json.loads((finished / "report" / "distillation.json").read_text())
    rows = {r["variant"]: r for r in rep["rows"] if r["regime"] == "base"}
    p_kd = json.loads((kd.folder / "eval.json").read_text())["rows"]["network"]["psnr_mean"]
    p_e2e = json.loads((e2e.folder / "eval.json").read_text())["rows"]["network"]["psnr_mean"]
    assert rows["kd"]["diff_vs_e2e_mean"] == pytest.approx(p_kd - p_e2e, abs=1e-9)
    assert rows["kd"]["status"] == "done" and rows["kd"]["seeds_done"] == 1
    assert "--regimes base --variants kd e2e --seeds 0" in rows["kd"]["reproduce"]
    for name in ("distillation.csv", "distillation.png", "mask_gradients.png", "distillation.txt"):
        assert (finished / "report" / name).stat().st_size > 0


def test_same_numbers_as_phaseforge_evaluate(bench, finished):
    """Phase objects: the benchmark's evaluation is `phaseforge evaluate --seed 0` (same objects,
    same noise stream), number for number."""
    from learning.evaluation import EvalEntry, evaluate_entries
    from phaseforge.learn import load_run
    plan, _, _ = _plan(bench, finished)
    job = plan[("base", "kd", 0)]
    _, model, _ = load_run(job.folder, "best")
    objects = bench.test_objects(job, TINY)
    ref = evaluate_entries([EvalEntry("n", model), EvalEntry("er", model, classical="er", n_iter=5),
                            EvalEntry("wf", model, classical="wf", n_iter=5)], objects,
                           encoding="phase", phase_range_rad=(0.0, 3.141592653589793), seed=0, progress=False)
    ev = json.loads((job.folder / "eval.json").read_text())["rows"]
    assert ev["network"]["psnr"] == pytest.approx(ref["n"]["per_sample"]["psnr"], abs=1e-6)
    assert ev["er"]["psnr"] == pytest.approx(ref["er"]["per_sample"]["psnr"], abs=1e-6)
    assert ev["wf"]["psnr"] == pytest.approx(ref["wf"]["per_sample"]["psnr"], abs=1e-6)


def test_runs_evaluated_without_wf_are_reevaluated_not_retrained(bench, tmp_path):
    """A cached run whose eval.json predates the Wirtinger-flow row gets it from the next sitting
    (re-evaluation from the saved checkpoint: no training, the other rows unchanged)."""
    out = tmp_path / "c"
    args = ["--out", str(out), "--regimes", "base", "--variants", "e2e", "--seeds", "0", "--no-progress"]
    assert bench.main(args, sizes_override=TINY) == 0
    plan = bench.build_plan(bench.select_regimes(["base"], False), ["e2e"], [0], TINY, out)
    f = plan[("base", "e2e", 0)].folder
    ev = json.loads((f / "eval.json").read_text())
    old = dict(ev, rows={k: v for k, v in ev["rows"].items() if k != "wf"})
    (f / "eval.json").write_text(json.dumps(old))
    ckpt = (f / "checkpoints" / "best.pt").stat().st_mtime_ns
    assert not bench._has_classical(plan[("base", "e2e", 0)])
    assert bench.main(args, sizes_override=TINY) == 0
    new = json.loads((f / "eval.json").read_text())
    assert new["rows"]["wf"]["psnr"] == ev["rows"]["wf"]["psnr"]
    assert new["rows"]["network"]["psnr"] == ev["rows"]["network"]["psnr"]
    assert new["rows"]["er"]["psnr"] == ev["rows"]["er"]["psnr"]
    assert (f / "checkpoints" / "best.pt").stat().st_mtime_ns == ckpt


def test_gain_alignment(bench):
    import torch
    x = torch.rand(2, 8, 8).to(torch.complex64)
    # amplitude: a scaled (and globally phased) copy is a perfect reconstruction after the gain
    xa = bench.gain_align(2.5 * x * torch.exp(torch.tensor(0.7j)), x, "amplitude")
    assert torch.allclose(xa.real, x.real, atol=1e-5) and float(xa.imag.abs().max()) == 0
    xc = bench.gain_align(0.3j * x, x, "complex")
    assert torch.allclose(xc, x, atol=1e-5)
    y = torch.polar(torch.ones(8, 8), torch.rand(8, 8))
    assert bench.gain_align(3 * y, y, "phase") is not None and torch.equal(bench.gain_align(3 * y, y, "phase"), 3 * y)


def test_rerun_skips_finished_runs(bench, finished, capsys):
    plan, _, _ = _plan(bench, finished)
    before = {j.folder: (j.folder / "eval.json").stat().st_mtime_ns for j in plan.values()}
    assert bench.main(_args(finished), sizes_override=TINY) == 0
    out = capsys.readouterr().out
    assert "done   base" not in out  # nothing was run
    assert {j.folder: (j.folder / "eval.json").stat().st_mtime_ns for j in plan.values()} == before


def test_interrupted_run_resumes_to_the_same_result(bench, finished):
    plan, regimes, _ = _plan(bench, finished)
    e2e = plan[("base", "e2e", 0)]
    ref = json.loads((e2e.folder / "eval.json").read_text())["rows"]["network"]["psnr_mean"]
    # simulate an interruption after the first epoch: no eval.json, no metrics.json, last.pt of epoch 1
    import torch
    from phaseforge.config import load
    from phaseforge.learn import train_run
    (e2e.folder / "eval.json").unlink()
    cfg = load(bench.CONFIG_DIR / e2e.config, e2e.overrides)
    train_run(cfg, e2e.folder, overwrite=True, progress=False, stop_after_epoch=1)
    assert not (e2e.folder / "metrics.json").exists()
    assert bench.job_status(e2e, TINY) == "partial (epoch 1)"
    assert "partial (epoch 1)" in bench.list_status(plan, regimes, ["e2e"], [0], TINY)
    torch.set_num_threads(1)
    assert bench.run_plan({("base", "e2e", 0): e2e}, regimes, TINY, progress=False, log=lambda *a: None) == {}
    again = json.loads((e2e.folder / "eval.json").read_text())
    assert again["steps"] == 4
    assert again["rows"]["network"]["psnr_mean"] == pytest.approx(ref, abs=1e-9)  # resumed = uninterrupted


def test_list_and_stale_cache(bench, finished, capsys):
    assert bench.main(_args(finished, "--list"), sizes_override=TINY) == 0
    out = capsys.readouterr().out
    assert "4/4 runs done" in out and "teacher" in out
    other = dict(TINY, n_test=5)  # another evaluation size: the cached evaluations do not count
    plan, _, _ = _plan(bench, finished)
    assert bench.job_status(plan[("base", "kd", 0)], other) == "stale"


def test_not_applicable_rows_and_bad_names(bench, tmp_path):
    regimes = bench.select_regimes(["no-unet"], False)
    plan = bench.build_plan(regimes, bench.select_variants(["kd_feature", "kd"]), [0], TINY, tmp_path)
    assert bench.job_status(plan[("no-unet", "kd_feature", 0)], TINY) == "n/a"
    assert bench.job_status(plan[("no-unet", "kd", 0)], TINY) == "missing"
    # the budget factor is the student's: the teacher of the no-U-Net regime is the base teacher
    base = bench.build_plan(bench.select_regimes(["base"], False), ["kd"], [0], TINY, tmp_path)
    assert plan[("no-unet", "kd", 0)].teacher.key == base[("base", "kd", 0)].teacher.key
    with pytest.raises(bench.BenchmarkError, match="not a regime; choose from"):
        bench.select_regimes(["bogus"], False)
    with pytest.raises(bench.BenchmarkError, match="PHASEFORGE_MNIST_IDX"):
        bench.select_regimes(["mnist"], False)


def test_report_accumulates_sittings(bench, finished, tmp_path):
    """A later sitting on another machine (empty run cache) adds its rows to the committed
    report; the rows of earlier sittings are kept, not turned into NOT RUN."""
    import shutil
    rep = tmp_path / "report"
    shutil.copytree(finished / "report", rep)
    before = {(r["regime"], r["variant"]): r for r in json.loads((rep / "distillation.json").read_text())["rows"]}
    args = ["--out", str(tmp_path / "cache2"), "--report", str(rep), "--regimes", "no-unet", "--variants", "fixed",
            "--seeds", "0", "--no-progress"]
    assert bench.main(args, sizes_override=TINY) == 0
    rep_json = json.loads((rep / "distillation.json").read_text())
    rows = {(r["regime"], r["variant"]): r for r in rep_json["rows"]}
    assert rows[("base", "kd")]["diff_vs_e2e_mean"] == before[("base", "kd")]["diff_vs_e2e_mean"]
    assert rows[("base", "kd")]["seeds_done"] == 1 and rows[("base", "kd")]["measured"]
    assert rows[("no-unet", "fixed")]["seeds_done"] == 1 and rows[("no-unet", "fixed")]["measured"]
    assert rows[("size-64", "kd")]["status"] == "NOT RUN"  # every regime is listed
    assert rows[("mnist", "kd")]["note"] == "needs user data: set PHASEFORGE_MNIST_IDX"
    assert {"base", "no-unet"} <= set(rep_json["meta"]["regimes_reported"])
    summary = (rep / "distillation_summary.md").read_text()
    assert "| `base` |" in summary and "| `no-unet` |" in summary and "| `size-64` | · |" in summary
    # the across-regimes line of `fixed` is the mean of its per-regime paired differences
    fixed = [rows[(g, "fixed")]["diff_vs_e2e_mean"] for g in ("base", "no-unet")]
    line = next(x for x in summary.splitlines() if x.startswith("| `fixed` | 2 |"))
    assert line.split(" | ")[2] == f"{sum(fixed) / 2:+.2f}"
    # a sitting that re-runs a regime's E2E but not its KD keeps KD's mask-gradient series
    before_grads = rep_json["mask_gradients"]
    assert set(before_grads["base"]) == {"e2e", "kd"}
    base_args = ["--out", str(tmp_path / "cache3"), "--report", str(rep), "--regimes", "base", "--variants",
                 "fixed", "--seeds", "0", "--no-progress"]
    assert bench.main(base_args, sizes_override=TINY) == 0
    grads = json.loads((rep / "distillation.json").read_text())["mask_gradients"]["base"]
    assert set(grads) == {"e2e", "kd"} and grads["kd"] == before_grads["base"]["kd"]
    # a report of other sizes is not merged (its numbers are not comparable)
    other = dict(TINY, n_test=5)
    assert bench.main(args, sizes_override=other) == 0
    rows = {(r["regime"], r["variant"]) for r in json.loads((rep / "distillation.json").read_text())["rows"]
            if r.get("seeds_done")}
    assert ("base", "kd") not in rows and ("no-unet", "fixed") in rows


def test_more_data_control_sees_the_unlabelled_objects_with_labels(bench, tmp_path):
    """e2e_all trains E2E on the training objects plus, with ground truth, the very objects
    kd_unlab sees without labels (items n_train … n_train + n_unlabelled of the training split),
    for at least as many steps."""
    from phaseforge.config import load
    from phaseforge.learn import load_objects
    plan = bench.build_plan(bench.select_regimes(["base"], False), ["e2e_all", "kd_unlab"], [0], TINY, tmp_path)
    c_all = load(bench.CONFIG_DIR / "student_e2e.yaml", plan[("base", "e2e_all", 0)].overrides)
    c_kd = load(bench.CONFIG_DIR / "student_distill.yaml", plan[("base", "kd_unlab", 0)].overrides)
    n0, e0, b = TINY["overrides"]["train.n_train"], TINY["overrides"]["train.epochs"], TINY["overrides"]["train.batch_size"]
    assert c_all.train.n_train == n0 + TINY["n_unlabelled"] == c_kd.train.n_train + c_kd.distill.n_unlabelled
    assert c_all.train.epochs * (c_all.train.n_train // b) >= e0 * (n0 // b)
    labelled = load_objects(c_all, "train", c_all.train.n_train, "n")
    pool = load_objects(c_kd, "train", c_kd.train.n_train + c_kd.distill.n_unlabelled, "n")
    assert bool((labelled == pool).all())


def test_longer_training_regime_and_mask_weight_sweep(bench, tmp_path):
    """train-4x multiplies every run's epochs by 4 (teacher and student, same objects), and its
    teachers are its own (a 4× teacher, not the base's); kd_mask03 / kd_mask3 are the default
    (mask loss alone) at the swept weights."""
    from phaseforge.config import load
    regimes = bench.select_regimes(["base", "train-4x"], False)
    plan = bench.build_plan(regimes, ["kd_mask", "kd_mask03", "kd_mask3"], [0], TINY, tmp_path)
    base, long = plan[("base", "kd_mask", 0)], plan[("train-4x", "kd_mask", 0)]
    for b, lg, name in ((base, long, "student_distill.yaml"), (base.teacher, long.teacher, "teacher.yaml")):
        cb, cl = load(bench.CONFIG_DIR / name, b.overrides), load(bench.CONFIG_DIR / name, lg.overrides)
        assert cl.train.epochs == 4 * cb.train.epochs
        assert cl.train.n_train == cb.train.n_train
        assert lg.key != b.key
    for v, w in (("kd_mask03", 0.3), ("kd_mask3", 3.0)):
        c = load(bench.CONFIG_DIR / "student_distill.yaml", plan[("base", v, 0)].overrides)
        assert (c.distill.mask_weight, c.distill.feature_weight) == (w, 0.0)
        assert plan[("base", v, 0)].teacher.key == base.teacher.key


def test_sweep_table_lists_the_extra_rows_where_they_ran(bench):
    """The weight-sweep table: one column per regime where an extra row ran, kd and kd_mask of the
    same regimes as anchors, bold where every seed is positive, the validation Δ in parentheses."""
    def row(regime, variant, diffs, val=None):
        r = {"regime": regime, "variant": variant, "status": "done", "seeds_done": len(diffs),
             "seeds_asked": 3, "diff_vs_e2e_per_seed": dict(enumerate(diffs)),
             "diff_vs_e2e_mean": sum(diffs) / len(diffs), "diff_vs_e2e_min": min(diffs),
             "diff_vs_e2e_max": max(diffs), "diff_vs_e2e_all_positive": all(d > 0 for d in diffs)}
        if val is not None:
            r["val_diff_vs_e2e_mean"] = val
        return r
    rows = [row("base", "kd", [-0.3, 0.0, 0.3]), row("base", "kd_mask", [0.1, 0.2, 0.3], 0.05),
            row("no-unet", "kd", [0.1, 0.1, 0.1]), row("base", "kd_mask3", [0.3, 0.6, 0.9], -0.1),
            row("labels-64", "kd_bal", [-0.2, -0.1])]
    lines = bench.sweep_table(rows).splitlines()
    assert lines[0] == "| row | `base` | `labels-64` |"
    body = {ln.split(" | ")[0][2:]: ln for ln in lines[2:]}
    assert set(body) == {"`kd`", "`kd_mask`", "`kd_mask3`", "`kd_bal`"}
    assert "**+0.60 [+0.30, +0.90]** (-0.10)" in body["`kd_mask3`"]
    assert "-0.00 [-0.30, +0.30] (—) | ·" in body["`kd`"] or "+0.00 [-0.30, +0.30] (—) | ·" in body["`kd`"]
    assert "-0.15 [-0.20, -0.10] (2/3) (—)" in body["`kd_bal`"]
    assert bench.sweep_table([row("base", "kd", [0.1, 0.2, 0.3])]) == ""


def test_runs_pin_the_unet_reconstructor_and_keep_their_folders(bench, tmp_path):
    """model.kind: unet is pinned for teacher and student (the committed rows were measured with
    it), and a pinned run's folder name (its configuration hash) is the one it had before the
    deep-unfolding keys existed: these names were computed by the code of commit e0a2a05."""
    from phaseforge.config import load
    regimes = bench.select_regimes(["base"], False)
    before = {"full": {"teacher": "teacher-5b47fa418c", "kd": "student_distill-4fd9769264",
                       "e2e": "student_e2e-66923d3e71"},
              "quick": {"teacher": "teacher-2e0d179ca0", "kd": "student_distill-69161a30c7",
                        "e2e": "student_e2e-3096be5318"}}
    for size_name, names in before.items():
        plan = bench.build_plan(regimes, list(names), [0], bench.SIZES[size_name], tmp_path)
        for (_, variant, _), job in plan.items():
            assert job.folder.name == names[variant], (size_name, variant)
            assert load(bench.CONFIG_DIR / job.config, job.overrides).model.kind == "unet"


def test_unfolded_reconstructor_plan_hashes_the_model_keys(bench, tmp_path):
    """--reconstructor unfolded (issue 17 §5): teacher and student use model.kind unfolded with the
    benchmark's sizes, the teacher keeps wider widths than the student, the model keys enter the
    folder hash (another n_stages is another folder; a U-Net run never shares a folder with an
    unfolded one), and the defaults are its own rows, regimes and folders."""
    from phaseforge.config import load
    regimes = bench.select_regimes(["base"], False, "unfolded")
    unet = bench.build_plan(regimes, ["kd"], [0], bench.SIZES["full"], tmp_path)
    unf = bench.build_plan(regimes, ["kd"], [0], bench.SIZES["full"], tmp_path, "unfolded")
    ju, jf = unet[("base", "kd", 0)], unf[("base", "kd", 0)]
    assert ju.folder != jf.folder and ju.teacher.folder != jf.teacher.folder
    assert ju.classical == ("er", "wf") and jf.classical == ("er", "wf", "tv", "pnp")
    ct, cs = (load(bench.CONFIG_DIR / j.config, j.overrides) for j in (jf.teacher, jf))
    for c in (ct, cs):
        assert (c.model.kind, c.model.n_stages, c.model.n_warm, c.model.shared) == ("unfolded", 5, 50, True)
    assert ct.model.widths == [24, 48, 96] and cs.model.widths == [12, 24, 48]
    old = dict(bench.UNFOLDED_MODEL)
    try:
        bench.UNFOLDED_MODEL["model.n_stages"] = 3
        other = bench.build_plan(regimes, ["kd"], [0], bench.SIZES["full"], tmp_path, "unfolded")
    finally:
        bench.UNFOLDED_MODEL.clear()
        bench.UNFOLDED_MODEL.update(old)
    assert other[("base", "kd", 0)].folder != jf.folder
    assert bench.select_variants(None, "unfolded") == ["teacher", "e2e", "kd", "kd_mask", "kd_unlab"]
    assert [r.name for r in bench.select_regimes(None, False, "unfolded")] == ["base", "cdp-protocol-l1",
                                                                              "object-amplitude"]
    with pytest.raises(bench.BenchmarkError, match="not a regime.*those of --reconstructor unet"):
        bench.select_regimes(["cdp-protocol-l1"], False)


def test_protocol_regime_is_the_standard_protocol_at_l1(bench, tmp_path):
    """cdp-protocol-l1: unit-free FFT without oversampling, prDeep α = 27 on |A x|² (no camera),
    amplitude objects in [0, 1] from images without any benchmark image; teacher L = 4 continuous
    masks, student L = 1 on a 4-level SLM with one pixel per sample."""
    from phaseforge.config import load
    regimes = bench.select_regimes(["cdp-protocol-l1"], False, "unfolded")
    plan = bench.build_plan(regimes, ["kd_mask"], [0], bench.SIZES["unfolded"], tmp_path, "unfolded")
    job = plan[("cdp-protocol-l1", "kd_mask", 0)]
    for j, L in ((job.teacher, 4), (job, 1)):
        c = load(bench.CONFIG_DIR / j.config, j.overrides)
        assert (c.optics.method, c.optics.oversampling, c.optics.detector_order) == ("fft", 1.0, "fft")
        assert (c.noise.model, c.noise.alpha, c.sensor.enabled) == ("prdeep", 27.0, False)
        assert (c.data.encoding, c.data.source, c.masks.n_masks) == ("amplitude", "embedded:nobench", L)
    c = load(bench.CONFIG_DIR / job.config, job.overrides)
    assert c.slm.enabled and c.slm.bit_depth == 2 and c.slm.pixel_pitch_m == c.optics.pitch_m
    assert not load(bench.CONFIG_DIR / job.teacher.config, job.teacher.overrides).slm.enabled
    objs = bench.test_objects(job, bench.SIZES["unfolded"])
    assert objs.shape == (64, 32, 32) and float(objs.imag.abs().max()) == 0.0
    assert 0.0 <= float(objs.real.min()) and float(objs.real.max()) <= 1.0


def test_margin_over_the_best_classical_row_per_seed(bench):
    """The student's margin is network − max over every classical row of the SAME seed's run (not
    the max of the means); the side-by-side table takes the U-Net set's max of ER and WF per seed."""
    def ev(net, **cl):
        return {"rows": dict({"network": {"psnr_mean": net}}, **{k: {"psnr_mean": v} for k, v in cl.items()})}
    evs = {0: ev(30.0, er=25.0, wf=26.0, tv=31.0, pnp=29.0), 1: ev(33.0, er=25.0, wf=26.0, tv=28.0, pnp=29.5)}
    out = bench.classical_summary(evs, [0, 1], ("er", "wf", "tv", "pnp"))
    assert out["best_classical_per_seed"] == {0: 31.0, 1: 29.5}
    assert out["best_classical_solver_per_seed"] == {0: "tv", 1: "pnp"}
    assert out["margin_vs_best_classical_per_seed"] == {0: -1.0, 1: 3.5}
    assert out["margin_vs_best_classical_mean"] == pytest.approx(1.25)
    assert (out["margin_vs_best_classical_min"], out["margin_vs_best_classical_max"]) == (-1.0, 3.5)
    assert out["tv_psnr_mean"] == pytest.approx(29.5) and out["pnp_psnr_mean"] == pytest.approx(29.25)
    unet = [{"regime": "base", "variant": "e2e", "seeds_done": 2, "seeds_asked": 2, "psnr_mean": 30.0,
             "psnr_per_seed": {0: 29.0, 1: 31.0}, "er_psnr_per_seed": {0: 30.0, 1: 28.0},
             "wf_psnr_per_seed": {0: 29.5, 1: 28.5}}]
    unf = [dict({"regime": "base", "variant": "e2e", "seeds_done": 2, "seeds_asked": 2, "psnr_mean": 31.5}, **out)]
    table = bench.side_by_side(unet, unf)
    assert "| 29.25 (max ER, WF) | +0.75 [-1.00, +2.50] |" in table
    assert "| 30.25 (max ER, WF, TV, PnP) | +1.25 [-1.00, +3.50] |" in table


def test_unfolded_protocol_run_end_to_end(bench, tmp_path):
    """One tiny protocol-regime E2E run through the benchmark: trained with the unfolded
    reconstructor, evaluated with the regularised rows, and the report carries the margin."""
    out = tmp_path / "u"
    assert bench.main(["--out", str(out), "--reconstructor", "unfolded", "--regimes", "cdp-protocol-l1",
                       "--variants", "e2e", "--seeds", "0", "--no-progress"], sizes_override=TINY) == 0
    rep = json.loads((out / "report" / "distillation.json").read_text())
    row = next(r for r in rep["rows"] if r["regime"] == "cdp-protocol-l1" and r["variant"] == "e2e")
    assert row["seeds_done"] == 1 and set(row["best_classical_solver_per_seed"].values()) <= {"er", "wf", "tv", "pnp"}
    assert row["margin_vs_best_classical_mean"] == pytest.approx(row["psnr_mean"] - row["best_classical_mean"])
    assert rep["meta"]["reconstructor"] == "unfolded" and rep["meta"]["classical"] == ["er", "wf", "tv", "pnp"]
    assert (out / "report" / "side_by_side.md").is_file()
    assert "cdp-protocol-l1" in (out / "report" / "distillation_summary.md").read_text()


def test_regularised_rows_start_from_the_er_row_at_the_measured_energy(bench, monkeypatch):
    """TV / PnP start from the ER row's estimate (unit RMS) rescaled to the measured energy: for
    unit-modulus masks AᴴA = s·I, so ‖x0‖² = Σy/s (noiseless here: float32 rounding, 1e-4)."""
    import torch
    from phaseforge.config import load
    from phaseforge.learn import CONFIG_DIR, build_model
    import learning.solvers as solvers

    model = build_model(load(CONFIG_DIR / "teacher.yaml", ["data.size=16", "sensor.enabled=false",
                                                           "data.encoding=amplitude"]))
    x = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(1)).to(torch.complex64)
    y = model.physics.measure(x, noise="none")
    start = bench.classical_estimate(model.physics, y, "er", encoding="amplitude", classical_iters=20)
    seen = {}

    def fake_solve(op, yy, solver, **kw):
        seen.update(kw, solver=solver)
        return type("R", (), {"x": kw["x0"]})()
    monkeypatch.setattr(solvers, "solve", fake_solve)
    out = bench.classical_estimate(model.physics, y, "tv", encoding="amplitude", classical_iters=20, start=start)
    s = solvers.estimate_norm_sq(model.physics.system, (16, 16), dtype=torch.complex64)
    energy = (out.abs() ** 2).sum(dim=(-2, -1))
    assert torch.allclose(energy, y.sum(dim=(-3, -2, -1)) / s, rtol=1e-4)
    assert torch.allclose(out / out.abs().pow(2).mean(dim=(-2, -1), keepdim=True).sqrt(), start, atol=1e-5)
    assert seen["solver"] == "tv" and seen["real"] and seen["nonnegative"] and seen["n_iter"] == bench.REGULARISED_ITERS
