import pytest
import torch


def make_tiny_model(n_masks=1, widths=(4, 8), role="student", slm_upsample=None, levels=4, norm="batch",
                    seed=0, size=16, photons=100.0, learn_masks=True):
    """A small PhaseRetrievalModel (16×16 phase objects, 2× oversampled Fraunhofer, 100 photons)."""
    from optics.cdp import CDPSystem
    from optics.sensor import Sensor
    from optics.slm import SLM, PhaseLUT
    from learning.systems import CodedPhysics, PhaseRetrievalModel, Reconstructor, build_phase_mask

    torch.manual_seed(seed)
    up = slm_upsample or 1
    masks = build_phase_mask(n_masks, (size // up, size // up), seed=seed, role=role)
    slm = None
    if slm_upsample:
        slm = SLM(pixel_pitch_m=8e-6 * up, sim_pitch_m=8e-6, lut=PhaseLUT.linear(int(levels).bit_length() - 1),
                  quantization="ste")
    system = CDPSystem(masks, pitch_m=8e-6, wavelength_m=633e-9, z_m=0.1, oversampling=2.0, slm=slm)
    sensor = Sensor(mean_photons=photons, budget_dims=3) if photons else None
    rec = Reconstructor(encoding="phase", widths=widths, norm=norm, n_unrolled=3)
    return PhaseRetrievalModel(CodedPhysics(system, sensor), rec, learn_masks=learn_masks)


@pytest.fixture
def tiny_model():
    """Factory of small PhaseRetrievalModels (:func:`make_tiny_model`)."""
    return make_tiny_model


@pytest.fixture(scope="session")
def phase_objects():
    """48 phase objects (16×16) from the embedded train split and 16 from val."""
    from learning.encoding import ObjectSet
    from learning.images import open_image_source

    def objs(split, n):
        o = ObjectSet(open_image_source("embedded", 16, split=split, n=n), encoding="phase")
        return torch.stack([o[i] for i in range(n)])

    return objs("train", 48), objs("val", 16)


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spinning on a shared machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
