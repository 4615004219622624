"""Config loading: validated, key paths named in errors, overrides, round trip."""
import pytest
import yaml

from phaseforge.config import Config, ConfigError, default_config, dump, from_dict, load


def test_defaults_validate_and_round_trip(tmp_path):
    cfg = default_config()
    text = dump(cfg)
    p = tmp_path / "c.yaml"
    p.write_text(text)
    again = load(p)
    assert again == cfg
    assert from_dict(Config, yaml.safe_load(text)) == cfg


def test_yaml_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optics:\n  z_m: 0.25\n  wavelength_m: 532e-9\nsensor:\n  read_noise_e: 3\n")
    cfg = load(p, ["masks.n_masks=2", "optics.method=asm", "slm.lut={gray: [0, 255], phase_rad: [0, 6.0]}"])
    assert cfg.optics.z_m == 0.25 and cfg.optics.wavelength_m == pytest.approx(532e-9)
    assert cfg.sensor.read_noise_e == 3.0 and isinstance(cfg.sensor.read_noise_e, float)
    assert cfg.masks.n_masks == 2 and cfg.optics.method == "asm"
    assert cfg.slm.lut.gray == [0.0, 255.0]


@pytest.mark.parametrize("text, match", [
    ("optics:\n  sensor:\n    read_noise_e: 1\n", r"unknown key 'optics.sensor'"),
    ("sensor:\n  read_noise: 1\n", r"unknown key 'sensor.read_noise'"),
    ("sensor:\n  read_noise_e: lots\n", r"sensor.read_noise_e must be a number"),
    ("masks:\n  n_masks: 2.5\n", r"masks.n_masks must be an integer"),
    ("optics:\n  method: rayleigh\n", r"optics.method = 'rayleigh' is not one of"),
    ("optics:\n  wavelength_m: 633\n", r"optics.wavelength_m = 633.* 633e-9"),
    ("slm:\n  enabled: true\nmasks:\n  kind: octanary\n", r"phase-only SLM"),
    ("- a\n- b\n", r"mapping at the top level"),
    ("optics:\n  detector_order: shifted\n", r"optics.detector_order = 'shifted' is not one of"),
    ("noise:\n  model: speckle\n", r"noise.model = 'speckle' is not one of"),
    ("noise:\n  model: prdeep\n", r"sensor.enabled is true.*set sensor.enabled=false"),
    ("sensor:\n  enabled: false\nnoise:\n  model: prdeep\n  alpha: -9\n", r"noise.model = 'prdeep'.*alpha.*noise.alpha"),
    ("sensor:\n  enabled: false\nnoise:\n  model: gaussian\n", r"needs sigma"),
    ("optics:\n  method: fft\nsensor:\n  pitch_m: 16e-6\n", r"'fft' is unit-free.*sensor.pitch_m=null"),
])
def test_bad_configs_name_the_key(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load(p)


def test_bad_overrides_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'optics.zz'"):
        load(None, ["optics.zz=1"])
    with pytest.raises(ConfigError, match="key.path=value"):
        load(None, ["optics.z_m"])
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.yaml")


def test_benchmark_protocol_keys_validate_and_show_in_config(capsys):
    from phaseforge.cli import main

    cfg = load(None, ["optics.method=fft", "optics.detector_order=fft", "sensor.enabled=false", "noise.model=poisson",
                      "noise.alpha=81"])
    assert (cfg.optics.method, cfg.optics.detector_order, cfg.noise.model, cfg.noise.alpha) == ("fft", "fft", "poisson", 81.0)
    assert main(["config", "--set", "optics.method=fft", "--set", "sensor.enabled=false",
                 "--set", "noise.model=prdeep", "--set", "noise.alpha=27"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["noise"] == {"model": "prdeep", "alpha": 27.0, "photons_per_unit": None, "sigma": None}
    assert shown["optics"]["method"] == "fft" and shown["optics"]["detector_order"] == "centered"


def test_distill_default_is_the_mask_loss_alone():
    """`phaseforge distill`'s measured default (issue 8; kept after the deep-unfolding re-measurement
    of issue 17 §5, DistillConfig's docstring): the spectrum mask loss at weight 1 and no feature,
    output or unlabelled term — in the config defaults and in data/configs/student_distill.yaml."""
    from phaseforge.learn import CONFIG_DIR
    for d in (load(None).distill, load(CONFIG_DIR / "student_distill.yaml").distill):
        assert (d.mask_loss, d.mask_weight, d.recon_weight) == ("spectrum", 1.0, 1.0)
        assert (d.feature_weight, d.output_weight, d.unlabelled_weight, d.n_unlabelled) == (0.0, 0.0, 0.0, 0)
