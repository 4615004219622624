"""The standard CDP benchmark: protocol, scoring, files (tiny sizes; the real run is in README)."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import benchmarks.cdp_benchmark as cb  # noqa: E402


def test_operator_is_the_published_unitary_fft_in_fft_order():
    masks = cb.random_masks(3, 16, seed=1)
    op = cb.make_operator(masks)
    x = torch.rand(16, 16, generator=torch.Generator().manual_seed(0)).to(torch.complex64)
    ref = torch.fft.fft2(masks * x, norm="ortho")  # FFT2(M_l ⊙ x)/N, DC at index 0
    torch.testing.assert_close(op.A(x), ref, atol=1e-5, rtol=1e-5)
    # Parseval per mask (|M_l| = 1): every pattern carries ‖x‖²
    torch.testing.assert_close(op.intensity(x).sum(dim=(-2, -1)), (x.abs() ** 2).sum().expand(3), rtol=1e-5, atol=0)


def test_masks_are_uniform_random_phases_and_reload_from_phases_or_complex(tmp_path):
    m = cb.random_masks(4, 64, seed=3)
    torch.testing.assert_close(m.abs(), torch.ones(4, 64, 64), atol=1e-6, rtol=0)
    th = torch.angle(m).remainder(2 * math.pi).numpy()
    # U[0, 2π): mean π, variance π²/3 — within 5 standard errors for 16384 values
    assert abs(th.mean() - math.pi) < 5 * math.pi / math.sqrt(3 * th.size)
    np.save(tmp_path / "phases.npy", th.astype(np.float64))
    np.save(tmp_path / "complex.npy", m.numpy())
    torch.testing.assert_close(cb.load_masks(tmp_path / "phases.npy", 64), m, atol=1e-5, rtol=0)
    torch.testing.assert_close(cb.load_masks(tmp_path / "complex.npy", 64), m)
    with pytest.raises(cb.BenchmarkError, match="expected"):
        cb.load_masks(tmp_path / "complex.npy", 32)


def test_score_psnr_is_on_the_255_scale_and_the_residual_vanishes_at_the_truth():
    g = torch.Generator().manual_seed(0)
    x = 0.2 + 0.6 * torch.rand(16, 16, generator=g)
    op = cb.make_operator(cb.random_masks(2, 16, seed=0))
    b = op.intensity(x.to(torch.complex64)).sqrt()
    s = cb.score((x + 0.1).to(torch.complex64), x, op, b)  # error 0.1 everywhere = 25.5 of 255
    assert s["psnr"] == pytest.approx(20.0, abs=1e-3)
    # a global phase (and the sign of a real image) is not an error
    s0 = cb.score((-x).to(torch.complex64), x, op, b)
    assert s0["psnr"] > 100 and s0["residual"] < 1e-5


def test_same_noise_for_every_method_and_distinct_per_image_and_alpha():
    seeds = {cb.measurement_seed(0, i, a, "prdeep") for i in range(8) for a in cb.ALPHAS}
    assert len(seeds) == 24
    assert cb.measurement_seed(0, 3, 27.0, "prdeep") == cb.measurement_seed(0, 3, 27.0, "prdeep")


def test_run_writes_csv_md_figure_and_json(tmp_path):
    from PIL import Image
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    g = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray((g.random((40, 40)) * 255).astype(np.uint8)).save(imgs / f"im{k}.png")
    out = tmp_path / "out"
    rc = cb.main(["--images", str(imgs), "--size", "32", "--alpha", "9", "81", "--methods", "er", "--n-masks", "2",
                  "--out", str(out), "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert rc == 0
    for f in ("cdp_benchmark.csv", "cdp_benchmark.md", "reconstructions.png"):
        assert (out / f).stat().st_size > 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["protocol"]["n_masks"] == 2 and res["protocol"]["names"] == ["im0", "im1"]
    rows = {(r["method"], r["alpha"]): r for r in res["rows"]}
    assert set(rows) == {("er", 9.0), ("er", 81.0)}
    for r in rows.values():
        assert {"method", "kind", "alpha", "n_masks", "noise", "psnr_mean", "ssim_mean", "seconds_per_image",
                "per_image"} <= set(r)
        assert set(r["per_image"]) == {"im0", "im1"} and r["kind"] == "classical"
    # more noise, lower PSNR (same masks, same images)
    assert rows[("er", 9.0)]["psnr_mean"] > rows[("er", 81.0)]["psnr_mean"] + 5


def test_bad_options_are_named(tmp_path, capsys):
    assert cb.main(["--n-masks", "9", "--out", str(tmp_path)]) == 2
    assert "1 … 8" in capsys.readouterr().err
    assert cb.main(["--methods", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown method" in capsys.readouterr().err


def test_four_level_masks_take_exactly_the_four_slm_phases_equally_often():
    """``--mask-levels 4``: phases 2πk/4 only (an SLM with 4 levels), each with probability 1/4
    (65536 values: the count of each level within 5 standard errors of 16384)."""
    m = cb.random_masks(1, 256, seed=5, levels=4)
    torch.testing.assert_close(m.abs(), torch.ones(1, 256, 256), atol=1e-6, rtol=0)
    k = torch.angle(m).remainder(2 * math.pi) / (math.pi / 2)
    assert torch.allclose(k, k.round(), atol=1e-5)
    counts = torch.bincount(k.round().long().remainder(4).flatten(), minlength=4).double()
    n = counts.sum().item()
    assert all(abs(c - n / 4) < 5 * math.sqrt(n * 0.25 * 0.75) for c in counts.tolist())
    # the training script draws the same kind of masks for the L = 1 model
    import benchmarks.train_cdp_model as tm
    t = torch.angle(tm.random_masks((2, 1, 64, 64), torch.Generator().manual_seed(0), levels=4))
    q = t.remainder(2 * math.pi) / (math.pi / 2)
    assert torch.allclose(q, q.round(), atol=1e-5) and len(torch.unique(q.round().remainder(4))) == 4


def test_a_learned_row_runs_only_at_the_number_of_masks_it_was_trained_for(tmp_path, capsys):
    """The L = 4 model at L = 1 (and the L = 1 model at L = 4) is skipped, saying why, not run on
    measurements it was not trained for."""
    from PIL import Image
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)).save(imgs / "a.png")
    rc = cb.main(["--images", str(imgs), "--size", "16", "--alpha", "27", "--methods", "er", "unfolded",
                  "unfolded-l1", "--n-masks", "1", "--out", str(tmp_path / "o"), "--no-progress"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipping unfolded: trained for L = 4, this run has L = 1" in err
    assert "skipping unfolded-l1: trained for L = 4" not in err


def test_tuned_rows_use_the_settings_of_their_alpha_and_refuse_another_regime(tmp_path, capsys):
    """``--tuned``: the regularised rows re-tuned for a regime (tuning images only) run with the
    setting stored for each α; a file tuned for another L or other mask levels is refused."""
    from PIL import Image
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)).save(imgs / "a.png")
    best = {"tv": {"settings": {"weight_factor": 2.0, "n_iter": 5}},
            "pnp-nlm": {"settings": {"denoiser": "nlm", "sigma_start": 10.0, "sigma_end": 2.0, "n_iter": 3}}}
    f = tmp_path / "t.json"
    f.write_text(json.dumps({"n_masks": 1, "mask_levels": 4, "alphas": {"27": {"best": best}}}))
    common = ["--images", str(imgs), "--size", "16", "--alpha", "27", "--out", str(tmp_path / "o"), "--no-progress"]
    assert cb.main(common + ["--n-masks", "1", "--mask-levels", "4", "--tuned", str(f),
                             "--methods", "tv", "tv-tuned", "--json", str(tmp_path / "r.json")]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert set(rows) == {"tv", "tv-tuned"}
    # a different λ and schedule: a different reconstruction of the same measurement
    assert rows["tv"]["psnr_mean"] != rows["tv-tuned"]["psnr_mean"]
    assert cb.main(common + ["--n-masks", "4", "--tuned", str(f)]) == 2
    assert "tuned for L = 1, 4 mask levels; this run has L = 4, 0 mask levels" in capsys.readouterr().err
    f.write_text("{}")
    assert cb.main(common + ["--n-masks", "1", "--mask-levels", "4", "--tuned", str(f)]) == 2
    assert "not a tuning file" in capsys.readouterr().err
    cb.TUNED.clear()


def test_merge_into_replaces_rows_of_the_same_measurements_and_refuses_others(tmp_path, capsys):
    """``--merge-into``: a re-run row replaces the row of the same method/noise/α in an earlier
    results file (others kept, new ones added, the .md rewritten); another mask seed is refused."""
    from PIL import Image
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.fromarray((np.random.default_rng(0).random((24, 24)) * 255).astype(np.uint8)).save(imgs / "a.png")
    base = tmp_path / "base.json"
    common = ["--images", str(imgs), "--size", "16", "--alpha", "27", "--n-masks", "2", "--out", str(tmp_path / "o"),
              "--no-progress"]
    assert cb.main(common + ["--methods", "er", "hio", "--json", str(base)]) == 0
    before = {r["method"]: r for r in json.loads(base.read_text())["rows"]}
    assert cb.main(common + ["--methods", "er", "wf", "--merge-into", str(base)]) == 0
    after = {r["method"]: r for r in json.loads(base.read_text())["rows"]}
    assert list(after) == ["er", "hio", "wf"]
    assert after["hio"] == before["hio"] and "--merge-into" in after["er"]["command"]
    assert after["er"]["psnr_mean"] == pytest.approx(before["er"]["psnr_mean"])  # same measurements, same ER
    assert "| wf |" in base.with_suffix(".md").read_text()
    assert cb.main(common + ["--methods", "er", "--seed", "3", "--merge-into", str(base)]) == 2
    assert "measured with another masks, seed" in capsys.readouterr().err
