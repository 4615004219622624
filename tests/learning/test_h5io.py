"""learning.h5io: the CDP dataset file keeps its promises (layout, resume, shards, errors).

The simulator here is a stand-in (|FFT(x·e^{iθ_l})|² plus Gaussian noise drawn from each
sample's generator); the physics lives in optics and is tested there.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import tracemalloc

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from learning.errors import (DatasetExistsError, DatasetFormatError, DatasetIncompleteError,
                             DatasetNotFoundError, DatasetVersionError, LearningError,
                             OutputFolderError, ResumeMismatchError, ShardError,
                             SimulationOutputError)
from learning.h5io import (CDPDataset, CDPWriter, journal_path, merge_shards, open_cdp_file,
                           read_attributes, read_masks, read_params, sample_generator,
                           shard_from_env, shard_path, write_cdp_dataset)
from learning.h5io import tmp_path as temporary_name

H = W = 8
L = 2
MASKS = torch.rand(L, H, W, generator=torch.Generator().manual_seed(7)) * 2 * np.pi
PARAMS = {
    "optics": {"wavelength_m": 6.328e-7, "pitch_m": 8e-6, "z_m": 0.1, "method": "asm",
               "band_limit": True},
    "sensor": {"read_noise_e": 2.5, "exposure_s": 1e-3, "bit_depth": 12, "gain_dn": 0.5},
    "masks": {"kind": "octanary", "levels_rad": (0.0, 1.5708, 3.1416), "n": L},
    "note": None,
    "names": ["a", "b"],
}
CONFIG = "optics:\n  wavelength_m: 6.328e-7\n"


class Objects:
    """A deterministic sequence of complex (H, W) objects."""

    def __init__(self, n, seed=0):
        self.n, self.seed = n, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = torch.Generator().manual_seed(1000 * self.seed + i)
        return torch.polar(torch.rand(H, W, generator=g), torch.rand(H, W, generator=g) * 3.0)


def simulate(x, gens):
    y = torch.fft.fft2(x[:, None] * torch.polar(torch.ones_like(MASKS), MASKS)).abs() ** 2
    noise = torch.stack([torch.randn(L, H, W, generator=g) for g in gens])
    return (y + 0.1 * noise).float()


def write(path, n=10, **kw):
    args = dict(objects=Objects(n), simulate=simulate, masks_rad=MASKS, params=PARAMS,
                config_yaml=CONFIG, software_version="0.1.0", seed=5, batch_size=4,
                progress=False)
    args.update(kw)
    return write_cdp_dataset(path, **args)


def arrays(path):
    with open_cdp_file(path) as f:
        return f["objects"][...], f["measurements"][...]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted, unsharded run (N=10, batch 4)."""
    return write(tmp_path_factory.mktemp("ref") / "DATA.h5")


# ---------------------------------------------------------------- layout and round trip
def test_round_trip_of_data_attributes_parameters_and_units(tmp_path):
    amp = torch.full((L, H, W), 0.5)
    p = write(tmp_path / "DATA.h5", n=5, mask_amplitude=amp, measurement_units="photons")
    assert p == tmp_path / "DATA.h5" and not temporary_name(p).exists()
    attrs = read_attributes(p)
    assert attrs["format_version"] == "1" and attrs["software"] == "phaseforge"
    assert attrs["software_version"] == "0.1.0" and attrs["seed"] == 5
    assert attrs["n_samples"] == 5 and attrs["n_written"] == 5 and attrs["complete"] is True
    assert attrs["config_yaml"] == CONFIG
    prm = read_params(p)
    assert prm["optics"]["wavelength_m"] == 6.328e-7 and prm["optics"]["wavelength_m__units"] == "m"
    assert prm["optics"]["pitch_m__units"] == "m" and prm["optics"]["z_m__units"] == "m"
    assert prm["sensor"]["read_noise_e__units"] == "e-"
    assert prm["sensor"]["exposure_s__units"] == "s" and prm["sensor"]["gain_dn__units"] == "DN"
    assert prm["masks"]["levels_rad__units"] == "rad"
    assert "bit_depth__units" not in prm["sensor"] and "method__units" not in prm["optics"]
    expected = {**PARAMS, "masks": {**PARAMS["masks"], "levels_rad": [0.0, 1.5708, 3.1416]}}
    assert read_params(p, with_units=False) == expected
    assert isinstance(prm["sensor"]["bit_depth"], int) and prm["optics"]["band_limit"] is True
    masks, mask_amp = read_masks(p)
    torch.testing.assert_close(masks, MASKS.float(), rtol=0, atol=0)
    torch.testing.assert_close(mask_amp, amp, rtol=0, atol=0)
    with h5py.File(p, "r") as f:
        units = {k: f[k].attrs["units"] for k in
                 ("objects", "measurements", "masks", "mask_amplitude")}
        assert units == {"objects": "1", "measurements": "photons", "masks": "rad",
                         "mask_amplitude": "1"}
        assert f["objects"].dtype == np.complex64 and f["measurements"].dtype == np.float32
        assert f["objects"].chunks == (1, H, W)
        assert f["measurements"].chunks == (1, L, H, W)
        assert f["measurements"].compression == "gzip"
        assert f["measurements"].compression_opts == 4
    # content: sample i is simulate(object i) with generator (seed, i), whatever the batching
    objs, meas = arrays(p)
    for i in range(5):
        np.testing.assert_array_equal(objs[i], Objects(5)[i].numpy())
        y = simulate(Objects(5)[i][None].to(torch.complex64), [sample_generator(5, i)])[0]
        np.testing.assert_array_equal(meas[i], y.numpy())
    # a no-mask_amplitude file reads back None; an explicit "<name>__units" entry wins
    q = write(tmp_path / "B.h5", n=2, params={"d_m": 1.0, "d_m__units": "m (measured)"})
    assert read_masks(q)[1] is None
    assert read_params(q) == {"d_m": 1.0, "d_m__units": "m (measured)"}
    assert read_params(q, with_units=False) == {"d_m": 1.0}


def test_batch_size_does_not_change_content(tmp_path, reference):
    p = write(tmp_path / "DATA.h5", batch_size=3)
    for a, b in zip(arrays(p), arrays(reference)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- interruption and resume
def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, reference):
    final = tmp_path / "DATA.h5"
    out = write(final, max_batches=1)
    assert out == tmp_path / "DATA.h5.tmp" and out.exists() and not final.exists()
    with pytest.raises(DatasetIncompleteError, match="incomplete") as ei:
        open_cdp_file(out)
    assert "--resume" in str(ei.value) and "4 of 10" in str(ei.value)
    with pytest.raises(DatasetNotFoundError, match="--resume"):
        open_cdp_file(final)
    with pytest.raises(DatasetExistsError, match="resume=True"):
        write(final)  # a stale .tmp is never silently discarded
    assert write(final, resume=True, max_batches=1) == out  # second interruption
    assert write(final, resume=True, batch_size=5) == final
    assert not out.exists()
    for a, b in zip(arrays(final), arrays(reference)):
        np.testing.assert_array_equal(a, b)


def test_resume_with_other_inputs_says_what_differs(tmp_path):
    final = tmp_path / "DATA.h5"
    write(final, max_batches=1)
    with pytest.raises(ResumeMismatchError) as ei:
        write(final, resume=True, seed=6)
    assert "seed: 5 (the file) vs 6 (now)" in str(ei.value)
    other = {**PARAMS, "optics": {**PARAMS["optics"], "z_m": 0.2}}
    with pytest.raises(ResumeMismatchError,
                       match=r"parameter optics.z_m: 0.1 \(the file\) vs 0.2 \(now\)"):
        write(final, resume=True, params=other)
    with pytest.raises(ResumeMismatchError, match="object 0 differs"):
        write(final, resume=True, objects=Objects(10, seed=1))
    assert write(final, overwrite=True) == final  # overwrite discards the stale .tmp


def test_existing_output_needs_overwrite(tmp_path):
    p = write(tmp_path / "DATA.h5", n=2)
    with pytest.raises(DatasetExistsError) as ei:
        write(p, n=2)
    assert str(p) in str(ei.value) and "--overwrite" in str(ei.value)
    assert isinstance(ei.value, ValueError) and isinstance(ei.value, FileExistsError)
    write(p, n=3, overwrite=True)
    assert read_attributes(p)["n_samples"] == 3


def test_simulate_output_is_checked(tmp_path):
    with pytest.raises(SimulationOutputError, match=r"expected \(B=4, L=2"):
        write(tmp_path / "D.h5", simulate=lambda x, g: simulate(x, g)[:, :1])
    assert not (tmp_path / "D.h5.tmp").exists()


# ---------------------------------------------------------------- memory stays flat
def test_writer_batches_bounded_and_memory_flat(tmp_path):
    calls = []

    def spy(x, gens):
        calls.append(x.shape[0])
        assert len(gens) == x.shape[0]
        return simulate(x, gens)

    # one compression thread: each zlib deflate holds a ≈300 kB state while it runs (constant in
    # N); with two threads the peak would depend on whether two of them happen to overlap
    write(tmp_path / "warmup.h5", n=8, simulate=spy, batch_size=8)  # one-time imports/caches
    peaks = {}
    for n in (50, 200):
        calls.clear()
        tracemalloc.start()
        write(tmp_path / f"N{n}.h5", n=n, simulate=spy, batch_size=8, threads=1)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert max(calls) <= 8 and sum(calls) == n
    # 150 more samples would hold 150·(2·8·8·4 + 8·8·8) B = 150 kB if kept; allow 48 kB of noise
    assert peaks[200] - peaks[50] < 48 * 1024, peaks


# ---------------------------------------------------------------- validation on open
def _copy_and_edit(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        edit(f)
    return dst


def test_missing_or_malformed_dataset_is_named(tmp_path, reference):
    p = _copy_and_edit(reference, tmp_path / "a.h5", lambda f: f.__delitem__("masks"))
    with pytest.raises(DatasetFormatError, match="required dataset 'masks' is missing"):
        open_cdp_file(p)

    def flatten(f):
        del f["measurements"]
        f["measurements"] = np.zeros((10, 8, 8), np.float32)
        f["measurements"].attrs["units"] = "DN"

    p = _copy_and_edit(reference, tmp_path / "b.h5", flatten)
    with pytest.raises(DatasetFormatError) as ei:
        open_cdp_file(p)
    assert "'measurements' is malformed" in str(ei.value)
    assert "(N, L, Mh, Mw)" in str(ei.value) and "(10, 8, 8)" in str(ei.value)
    p = _copy_and_edit(reference, tmp_path / "c.h5",
                       lambda f: f["masks"].attrs.__delitem__("units"))
    with pytest.raises(DatasetFormatError, match="'masks' has no 'units'"):
        open_cdp_file(p)
    (tmp_path / "d.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(DatasetFormatError, match="not an HDF5 file"):
        open_cdp_file(tmp_path / "d.h5")


def test_wrong_format_version_is_explained(tmp_path, reference):
    def old(f):
        f.attrs["format_version"] = "0"
        f.attrs["software_version"] = "0.0.1"

    p = _copy_and_edit(reference, tmp_path / "a.h5", old)
    with pytest.raises(DatasetVersionError) as ei:
        open_cdp_file(p)
    msg = str(ei.value)
    assert "dataset format 0 from software phaseforge 0.0.1" in msg
    assert "reads format 1" in msg and "phaseforge simulate" in msg
    p = _copy_and_edit(reference, tmp_path / "b.h5",
                       lambda f: f.attrs.__delitem__("format_version"))
    with pytest.raises(DatasetVersionError, match="no format_version"):
        open_cdp_file(p)


# ---------------------------------------------------------------- shards
def test_shards_merged_as_virtual_dataset_equal_unsharded(tmp_path, reference):
    base = tmp_path / "run" / "DATA.h5"
    base.parent.mkdir()
    shards = [write(base, shard=(i, 3), batch_size=2) for i in range(3)]
    assert shards == [shard_path(base, i, 3) for i in range(3)]
    assert shards[1].name == "DATA.shard-1-of-3.h5"
    a = read_attributes(shards[1])
    assert (a["shard_index"], a["shard_count"], a["sample_offset"], a["n_samples_total"],
            a["n_samples"]) == (1, 3, 3, 10, 3)
    merged = merge_shards(str(base.parent / "DATA.shard-*-of-3.h5"), base)
    with h5py.File(merged, "r") as f:
        assert f["objects"].is_virtual and f["measurements"].is_virtual
        assert f.attrs["complete"] and f.attrs["n_samples"] == 10
    for x, y in zip(arrays(merged), arrays(reference)):
        np.testing.assert_array_equal(x, y)
    assert read_params(merged) == read_params(reference)
    with h5py.File(merged, "r") as f:  # no copy: virtual datasets own no storage
        assert f["objects"].id.get_storage_size() == 0
        assert f["measurements"].id.get_storage_size() == 0
    assert os.path.getsize(merged) < os.path.getsize(reference)
    # relative source paths: the folder can be moved
    moved = shutil.move(str(base.parent), str(tmp_path / "moved"))
    for x, y in zip(arrays(os.path.join(moved, "DATA.h5")), arrays(reference)):
        np.testing.assert_array_equal(x, y)
    # a missing shard is named, also when reading the merged file
    os.remove(os.path.join(moved, "DATA.shard-2-of-3.h5"))
    with pytest.raises(DatasetFormatError, match="DATA.shard-2-of-3.h5"):
        open_cdp_file(os.path.join(moved, "DATA.h5"))
    p0, p1 = (os.path.join(moved, f"DATA.shard-{i}-of-3.h5") for i in (0, 1))
    with pytest.raises(ShardError, match=r"shard 2 of 3 \(samples 6..9\) is missing") as ei:
        merge_shards([p0, p1], os.path.join(moved, "OUT.h5"))
    assert "DATA.shard-2-of-3.h5" in str(ei.value)
    with pytest.raises(ShardError, match="both shard 0 of 3"):
        merge_shards([p0, p0, p1], os.path.join(moved, "OUT.h5"))
    (tmp_path / "o").mkdir()
    other = write(tmp_path / "o" / "DATA.h5", shard=(2, 3), seed=9)
    with pytest.raises(ShardError, match="seed: 5 in .* 9 in"):
        merge_shards([p0, p1, other], tmp_path / "o" / "OUT.h5")
    assert not (tmp_path / "o" / "OUT.h5").exists()


def test_shard_from_env():
    assert shard_from_env({}) is None
    assert shard_from_env({"WORLD_SIZE": "1", "RANK": "0"}) is None
    assert shard_from_env({"WORLD_SIZE": "4", "RANK": "2"}) == (2, 4)
    with pytest.raises(ShardError, match="RANK"):
        shard_from_env({"WORLD_SIZE": "4"})
    with pytest.raises(ShardError, match="RANK=4"):
        shard_from_env({"WORLD_SIZE": "4", "RANK": "4"})


# ---------------------------------------------------------------- torch Dataset
def test_cdp_dataset_items_properties_and_splits(reference):
    ds = CDPDataset(reference)
    objs, meas = arrays(reference)
    assert len(ds) == 10 and ds.n_masks == L
    assert ds.object_shape == (H, W) and ds.measurement_shape == (L, H, W)
    o, m = ds[3]  # (x, y): object first, measurements second
    assert m.dtype == torch.float32 and o.dtype == torch.complex64
    np.testing.assert_array_equal(m.numpy(), meas[3])
    np.testing.assert_array_equal(o.numpy(), objs[3])
    torch.testing.assert_close(ds.masks_rad, MASKS.float(), rtol=0, atol=0)
    assert ds.params == read_params(reference)
    mem = CDPDataset(reference, in_memory=True)
    for i in range(10):
        torch.testing.assert_close(mem[i][1], ds[i][1], rtol=0, atol=0)
        torch.testing.assert_close(mem[i][0], ds[i][0], rtol=0, atol=0)
    parts = [CDPDataset(reference, split=s).indices for s in ("train", "val", "test")]
    assert sorted(np.concatenate(parts).tolist()) == list(range(10))
    val = CDPDataset(reference, split="val", in_memory=True)
    np.testing.assert_array_equal(val[0][1].numpy(), meas[val.indices[0]])
    # the sample index: the file row, also through a split and in memory
    x, y, k = CDPDataset(reference, split="val", return_index=True)[0]
    assert k == int(val.indices[0]) and isinstance(k, int)
    np.testing.assert_array_equal(x.numpy(), objs[k])
    s = val.sample(0)
    assert s["index"] == k and torch.equal(s["y"], y) and torch.equal(s["x"], x)
    pickle.loads(pickle.dumps(ds))  # after use: the open handle is not pickled


def test_dataloader_with_two_workers_reads_same_items(reference):
    ds = CDPDataset(reference)
    _ = ds[0]  # the parent process holds an open handle before the workers start
    loader = DataLoader(ds, batch_size=3, shuffle=False, num_workers=2)
    os_, ms = zip(*loader)
    direct = [ds[i] for i in range(len(ds))]
    torch.testing.assert_close(torch.cat(os_), torch.stack([d[0] for d in direct]),
                               rtol=0, atol=0)
    torch.testing.assert_close(torch.cat(ms), torch.stack([d[1] for d in direct]),
                               rtol=0, atol=0)
    # with the index: the default collation stacks it into a tensor of file rows
    ds_i = CDPDataset(reference, return_index=True, split="train")
    rows = torch.cat([k for _, _, k in DataLoader(ds_i, batch_size=4, num_workers=0)])
    assert rows.tolist() == ds_i.indices.tolist()


# ---------------------------------------------------------------- hard kills (in process)
def _as_if_hard_killed(path):
    """Make a cleanly stopped run look hard-killed: drop the journal's last 'closed' record."""
    j = journal_path(path)
    lines = j.read_text().splitlines()
    assert lines[-1].startswith('{"closed"')
    j.write_text("\n".join(lines[:-1]) + "\n")


def test_hard_killed_file_is_salvaged_up_to_the_first_bad_batch(tmp_path, reference):
    calls = []

    def spy(x, gens):
        calls.append(x.shape[0])
        return simulate(x, gens)

    final = tmp_path / "DATA.h5"
    write(final, max_batches=2)  # samples 0..7 committed (batches of 4)
    _as_if_hard_killed(final)
    assert write(final, resume=True, simulate=spy) == final
    assert sum(calls) == 2  # samples 0..7 salvaged, only 8..9 simulated again
    for a, b in zip(arrays(final), arrays(reference)):
        np.testing.assert_array_equal(a, b)
    assert not journal_path(final).exists()
    # a batch whose bytes do not match its journal checksum ends the salvage there
    calls.clear()
    final = tmp_path / "B.h5"
    write(final, max_batches=2)
    _as_if_hard_killed(final)
    j = journal_path(final)
    lines = j.read_text().splitlines()
    rec = json.loads(lines[-1])
    rec["crc32"][1] ^= 1
    j.write_text("\n".join(lines[:-1] + [json.dumps(rec)]) + "\n")
    assert write(final, resume=True, simulate=spy) == final
    assert sum(calls) == 6  # batch 4..7 failed its check: 4..9 simulated again
    for a, b in zip(arrays(final), arrays(reference)):
        np.testing.assert_array_equal(a, b)
    # a file too damaged to open is started afresh (its content is fixed by the inputs)
    calls.clear()
    final = tmp_path / "C.h5"
    write(final, max_batches=1)
    _as_if_hard_killed(final)
    with open(temporary_name(final), "r+b") as fh:
        fh.truncate(64)
    assert write(final, resume=True, simulate=spy) == final
    assert sum(calls) == 10
    for a, b in zip(arrays(final), arrays(reference)):
        np.testing.assert_array_equal(a, b)
    # a salvaged file is still checked against the new inputs
    final = tmp_path / "D.h5"
    write(final, max_batches=1)
    _as_if_hard_killed(final)
    with pytest.raises(ResumeMismatchError, match="seed: 5 \\(the file\\) vs 6 \\(now\\)"):
        write(final, resume=True, seed=6)


def test_tmp_without_journal_resumes_as_before(tmp_path, reference):
    # a .tmp stopped cleanly by phaseforge ≤ 0.1.0 has no journal: it is reopened as it is
    final = tmp_path / "DATA.h5"
    write(final, max_batches=1)
    journal_path(final).unlink()
    assert write(final, resume=True) == final
    for a, b in zip(arrays(final), arrays(reference)):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- writer API, compression
@pytest.mark.parametrize("write_behind", [True, False])
def test_writer_appends_batches_and_checks_them(tmp_path, reference, write_behind):
    objs, meas = arrays(reference)
    with pytest.raises(OutputFolderError, match=r"output folder .*nowhere does not exist.*mkdir -p"):
        CDPWriter(tmp_path / "nowhere" / "D.h5", n_samples=10, masks_rad=MASKS, params=PARAMS,
                  software_version="0.1.0", seed=5)
    w = CDPWriter(tmp_path / "D.h5", n_samples=10, masks_rad=MASKS, params=PARAMS,
                  config_yaml=CONFIG, software_version="0.1.0", seed=5, write_behind=write_behind)
    with w:
        for k0 in (0, 3, 7):
            k1 = {0: 3, 3: 7, 7: 10}[k0]
            assert w.next_index == k0
            y = torch.from_numpy(meas[k0:k1].copy())
            w.append(torch.from_numpy(objs[k0:k1]), y)
            y.fill_(-1.0)  # the caller reuses its buffer while the batch may still be written
            if k0 == 0:
                with pytest.raises(LearningError, match=r"expected real \(B=1, L=2"):
                    w.append(objs[3:4], meas[3:4, :1])
                with pytest.raises(LearningError, match="objects of shape"):
                    w.append(objs[3:4, :4], meas[3:4])
        with pytest.raises(LearningError, match="append at most 0 more"):
            w.append(objs[:1], meas[:1])
        assert w.close() == tmp_path / "D.h5"
    for a, b in zip(arrays(tmp_path / "D.h5"), (objs, meas)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("compression", ["gzip", "lzf", "zstd", "none"])
def test_compression_round_trip(tmp_path, reference, compression):
    p = write(tmp_path / "D.h5", compression=compression)
    for a, b in zip(arrays(p), arrays(reference)):
        np.testing.assert_array_equal(a, b)
    assert read_attributes(p)["compression"] == compression
    if compression == "gzip":  # chunks compressed by the writer decode through HDF5's own filters
        with h5py.File(p, "r") as f:
            d = f["measurements"]
            assert d.compression == "gzip" and d.compression_opts == 4 and d.shuffle


def test_unavailable_filter_names_the_package(tmp_path, monkeypatch):
    p = write(tmp_path / "D.h5", n=2, compression="zstd")
    import learning.h5io.compression as comp

    monkeypatch.setattr(comp.h5py.h5z, "filter_avail", lambda code: code != 32015)
    with pytest.raises(DatasetFormatError) as ei:
        open_cdp_file(p)
    msg = str(ei.value)
    assert "'zstd' (id 32015)" in msg and "pip install hdf5plugin" in msg and "D.h5" in msg
    with pytest.raises(LearningError, match="compression 'bz' is not one of gzip, lzf, zstd, none"):
        write(tmp_path / "E.h5", compression="bz")


def test_gzip_chunks_decode_with_the_standard_zlib(tmp_path):
    # the writer's own deflate (zlib-ng when installed) must give streams that plain zlib and
    # HDF5's filter decode: undo shuffle + deflate by hand and compare with the array
    import zlib

    from learning.h5io.compression import encode_chunk

    a = (np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 8, 8) * 1.5).astype(np.float32)
    raw = zlib.decompress(encode_chunk("gzip", a))
    back = np.frombuffer(raw, np.uint8).reshape(4, -1).T.copy().view(np.float32).reshape(a.shape)
    np.testing.assert_array_equal(back, a)
    c = (a[0] + 1j * a[1]).astype(np.complex64)
    raw = zlib.decompress(encode_chunk("gzip", c))
    back = np.frombuffer(raw, np.uint8).reshape(8, -1).T.copy().view(np.complex64).reshape(c.shape)
    np.testing.assert_array_equal(back, c)


def test_resume_after_the_rename_finds_the_finished_file(tmp_path):
    # killed between the rename and exiting: --resume reports the finished file, simulating
    # nothing, when it was written with the same inputs; otherwise the file is protected
    p = write(tmp_path / "DATA.h5", n=5)
    before = os.path.getmtime(p)
    calls = []
    assert write(p, n=5, resume=True, simulate=lambda x, g: calls.append(1) or simulate(x, g)) == p
    assert calls == [] and os.path.getmtime(p) == before
    with pytest.raises(DatasetExistsError, match="already exists"):
        write(p, n=5, resume=True, seed=6)


# ---------------------------------------------------------------- data in other files
def test_data_in_other_files_is_followed_only_within_the_shard_set(tmp_path, reference):
    """A dataset file someone sent must not make phaseforge read other files of this machine:
    external links and external raw storage are refused anywhere, virtual datasets only in a
    merged file, only for 'objects'/'measurements', and only over shards of its own set."""
    run = tmp_path / "run"
    run.mkdir()
    base = run / "DATA.h5"
    for i in range(2):
        write(base, shard=(i, 2), batch_size=2)
    merged = merge_shards([shard_path(base, i, 2) for i in range(2)], base)
    for x, y in zip(arrays(merged), arrays(reference)):  # the format's own links are followed
        np.testing.assert_array_equal(x, y)
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as f:  # a file outside the set, with what a source would need
        f["objects"] = np.ones((5, H, W), np.complex64)
        f.attrs["shard_count"], f.attrs["shard_index"] = 2, 1

    def repoint(f, source, listed=None):
        lay = h5py.VirtualLayout(shape=(10, H, W), dtype=np.complex64)
        lay[0:5] = h5py.VirtualSource("DATA.shard-0-of-2.h5", "objects", shape=(5, H, W))
        lay[5:10] = h5py.VirtualSource(source, "objects", shape=(5, H, W))
        attrs = dict(f["objects"].attrs)
        del f["objects"]
        f.create_virtual_dataset("objects", lay)
        f["objects"].attrs.update(attrs)
        if listed is not None:
            f.attrs["merged_from"] = np.array(listed, dtype=h5py.string_dtype())

    rel = os.path.relpath(secret, run)
    p = _copy_and_edit(merged, run / "a.h5", lambda f: repoint(f, rel))
    with pytest.raises(DatasetFormatError, match=r"reads \.\./secret\.h5:/?objects, which is not 'objects' of a shard in its shard set"):
        open_cdp_file(p)
    # listing the outsider in merged_from is not enough: it must be a shard of exactly this set
    with h5py.File(secret, "r+") as f:
        f.attrs["shard_count"] = 3
    p = _copy_and_edit(merged, run / "b.h5", lambda f: repoint(f, rel, ["DATA.shard-0-of-2.h5", rel]))
    with pytest.raises(DatasetFormatError, match="not a shard of this 2-shard set"):
        open_cdp_file(p)
    # a virtual dataset in an unmerged file, or for another dataset
    p = _copy_and_edit(reference, tmp_path / "c.h5", lambda f: repoint(f, rel))
    with pytest.raises(DatasetFormatError, match="only a merged file's 'objects' and 'measurements' may be"):
        open_cdp_file(p)

    def link(f):
        del f["masks"]
        f["masks"] = h5py.ExternalLink(str(secret), "/objects")

    p = _copy_and_edit(reference, tmp_path / "d.h5", link)
    with pytest.raises(DatasetFormatError, match=r"'masks' is an external link to .*secret\.h5:/objects"):
        open_cdp_file(p)
    p = _copy_and_edit(reference, tmp_path / "e.h5",
                       lambda f: f.create_group("parameters/extra").__setitem__("x", h5py.ExternalLink("/etc/hostname", "/")))
    with pytest.raises(DatasetFormatError, match="external link"):  # anywhere in the file, not only the data
        open_cdp_file(p)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(bytes(4 * 8))

    def external(f):
        f.create_dataset("notes", shape=(8,), dtype=np.float32, external=[(str(raw), 0, 32)])

    p = _copy_and_edit(reference, tmp_path / "f.h5", external)
    with pytest.raises(DatasetFormatError, match=r"'notes' keeps its data in external files .*raw\.bin"):
        open_cdp_file(p)
    with pytest.raises(DatasetFormatError, match="external"):
        CDPDataset(p)
