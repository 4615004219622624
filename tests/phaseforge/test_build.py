"""Building optics objects from a config: method options reach the propagator."""
import pytest

from optics.noise import PoissonNoise, PrDeepNoise
from phaseforge.build import system_from_config
from phaseforge.config import ConfigError, load


def test_auto_method_is_resolved_and_keeps_the_configured_options():
    # 32² objects, 2× oversampling → 64 samples; N·dx²/λ = 64·(8 µm)²/633 nm ≈ 6.5 mm
    near = system_from_config(load(None, ["optics.method=auto", "optics.z_m=0.005",
                                          "optics.propagation.evanescent=decay",
                                          "optics.propagation.band_limit=false", "optics.propagation.allow_aliasing=true"]))
    assert near.method == "asm"
    assert near.propagation_options == {"pad": True, "band_limit": False, "evanescent": "decay",
                                        "allow_aliasing": True}
    far = system_from_config(load(None, ["optics.method=auto", "optics.z_m=0.5"]))
    assert far.method == "fresnel-ir" and far.propagation_options == {"pad": True, "allow_aliasing": False}
    assert system_from_config(load(None, [])).propagation_options == {}  # fraunhofer takes none


def test_unit_free_method_detector_order_and_noise_model_reach_the_system():
    sys = system_from_config(load(None, ["optics.method=fft", "optics.oversampling=1", "optics.detector_order=fft",
                                         "sensor.enabled=false", "noise.model=prdeep", "noise.alpha=81"]))
    assert sys.unit_free and sys.detector_order == "fft" and sys.out_shape == (32, 32) and sys.out_pitch_m is None
    assert sys.noise_model == PrDeepNoise(81) and sys.sensor is None
    # poisson without photons_per_unit: the prDeep-equivalent (255/α)² photons per unit intensity
    pois = system_from_config(load(None, ["optics.method=fft", "sensor.enabled=false", "noise.model=poisson",
                                          "noise.alpha=9"]))
    assert pois.noise_model == PoissonNoise((255 / 9) ** 2)
    phys = system_from_config(load(None, ["optics.detector_order=fft"]))  # physical Fraunhofer in FFT order
    assert phys.detector_order == "fft" and phys.noise_model is None and phys.sensor is not None
    with pytest.raises(ConfigError, match="optics.detector_order.*real-space"):
        system_from_config(load(None, ["optics.method=asm", "optics.z_m=0.002", "optics.detector_order=fft"]))
