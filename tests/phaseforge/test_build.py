"""Building optics objects from a config: method options reach the propagator."""
from phaseforge.build import system_from_config
from phaseforge.config import load


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
