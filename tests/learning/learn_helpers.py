"""Helpers of the learning tests (a uniquely named module: importable from spawned workers)."""
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
    return PhaseRetrievalModel(CodedPhysics(system, sensor, masks=masks), rec, learn_masks=learn_masks)


def ddp_worker(rank, world, init_file, out_file, tr, va, folder):
    """One process of the 2-process data-parallel test (gloo, file:// rendezvous)."""
    import torch.distributed as dist
    from learning.losses import ReconstructionLoss
    from learning.training import TrainSettings, train
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model = make_tiny_model(n_masks=1, widths=(4, 8), norm="group", slm_upsample=2)
        settings = TrainSettings(epochs=2, batch_size=8, lr_mask=0.05, lr_net=3e-3, progress=False)
        train(model, [ReconstructionLoss()], {}, tr, va, settings, folder)
        if rank == 0:
            torch.save(model.state_dict(), out_file)
    finally:
        dist.destroy_process_group()
