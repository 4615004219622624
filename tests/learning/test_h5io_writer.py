"""learning.h5io.writer by value, through CDPWriter itself (fast; the mutation selection of the
writer runs these per mutant): the file's attributes, datasets, chunking and compression read
back with h5py, the journal's records and CRC-32s, shards, close/rename/resume semantics, each
refusal's message (argument, value, fix), durability (fsync) and the kill test hook."""
from __future__ import annotations

import json
import logging
import zlib

import h5py
import numpy as np
import pytest
import torch

from learning.errors import (DatasetExistsError, LearningError, OutputFolderError, ResumeMismatchError,
                             ShardError)
from learning.h5io import CDPWriter, journal_path, shard_path
from learning.h5io import tmp_path as temporary_name
from learning.h5io.rng import RNG_DOC
from learning.h5io.writer import KILL_ENV, check_int, object_at

H, W, L, MH, MW = 3, 4, 2, 5, 6
MASKS = (np.arange(L * MH * MW, dtype=np.float64).reshape(L, MH, MW) * 0.1)
PARAMS = {"optics": {"z_m": 0.1, "method": "asm"}, "n": 3}


def objs(n, start=0):
    """Deterministic complex64 objects ``start … start+n−1`` (B, H, W)."""
    k = np.arange(start, start + n)[:, None, None]
    y, x = np.mgrid[0:H, 0:W]
    return torch.from_numpy((np.cos(k + x + 0.5 * y) + 1j * np.sin(k * x - y)).astype(np.complex64))


def meas(n, start=0):
    k = np.arange(start, start + n)[:, None, None, None]
    return torch.from_numpy((k + np.arange(L * MH * MW).reshape(1, L, MH, MW) / 7.0).astype(np.float32))


def writer(path, n=5, **kw):
    args = dict(n_samples=n, masks_rad=MASKS, params=PARAMS, config_yaml="a: 1\n", software_version="9.9",
                seed=3, durable=False)
    args.update(kw)
    return CDPWriter(path, **args)


def journal(path):
    return [json.loads(s) for s in journal_path(path).read_text().splitlines()]


def crc(a):
    return zlib.crc32(np.ascontiguousarray(a).tobytes())


# -- the finished file ----------------------------------------------------------------------------------
@pytest.mark.parametrize("write_behind", [True, False])
def test_file_layout_read_back(tmp_path, write_behind):
    amp = np.full((L, MH, MW), 0.5)
    p = tmp_path / "D.h5"
    w = writer(p, n=5, mask_amplitude=amp, measurement_units="photons", write_behind=write_behind)
    assert (w.n_written, w.next_index, w.done) == (0, 0, False)
    w.append(objs(3), meas(3))
    assert w.next_index == 3 and not w.done
    w.append(objs(2, 3).numpy(), meas(2, 3).numpy().astype(np.float64))  # numpy in, float64 stored as float32
    assert w.done and w.next_index == 5
    assert w.close() == p
    assert w.n_written == 5
    assert not temporary_name(p).exists() and not journal_path(p).exists()
    with h5py.File(p, "r") as f:
        a = dict(f.attrs)
        assert a["format_version"] == "1" and a["software"] == "phaseforge" and a["software_version"] == "9.9"
        assert a["seed"] == 3 and a["seed"].dtype == np.int64
        assert a["n_samples"] == 5 and a["n_written"] == 5 and a["n_written"].dtype == np.int64
        assert a["complete"] == np.bool_(True) and a["config_yaml"] == "a: 1\n"
        assert a["rng"] == RNG_DOC and a["compression"] == "gzip"
        assert "shard_index" not in a
        o, m = f["objects"], f["measurements"]
        assert o.shape == (5, H, W) and o.dtype == np.complex64 and o.chunks == (1, H, W)
        assert m.shape == (5, L, MH, MW) and m.dtype == np.float32 and m.chunks == (1, L, MH, MW)
        np.testing.assert_array_equal(o[...], objs(5).numpy())
        np.testing.assert_array_equal(m[...], meas(5).numpy())
        assert (o.attrs["units"], o.attrs["axes"]) == ("1", "sample,y,x")
        assert (m.attrs["units"], m.attrs["axes"]) == ("photons", "sample,mask,y,x")
        k = f["masks"]
        assert k.dtype == np.float32 and k.chunks == (1, MH, MW)
        np.testing.assert_array_equal(k[...], MASKS.astype(np.float32))
        assert (k.attrs["units"], k.attrs["axes"]) == ("rad", "mask,y,x")
        ma = f["mask_amplitude"]
        assert ma.chunks == (1, MH, MW) and (ma.attrs["units"], ma.attrs["axes"]) == ("1", "mask,y,x")
        np.testing.assert_array_equal(ma[...], amp.astype(np.float32))
        for d in (o, m, k, ma):
            assert (d.compression, d.compression_opts, d.shuffle) == ("gzip", 4, True)
        assert dict(f["parameters"].attrs)["n"] == 3 and f["parameters/optics"].attrs["z_m"] == 0.1


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_the_caller_may_reuse_its_buffers_at_once(tmp_path, compression):
    # with write-behind the batch is written on another thread: it must be a copy of the
    # caller's arrays, which the caller overwrites as soon as append returns
    p = tmp_path / "D.h5"
    x, y = objs(2).numpy(), meas(2).numpy()  # complex64 / float32 already: no conversion copies
    with writer(p, n=4, compression=compression, threads=1) as w:
        for k in (0, 2):
            x[...], y[...] = objs(2, k).numpy(), meas(2, k).numpy()
            w.append(x, y)
            x[...], y[...] = -1, -1
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["objects"][...], objs(4).numpy())
        np.testing.assert_array_equal(f["measurements"][...], meas(4).numpy())


def test_uncompressed_file_and_a_2d_mask(tmp_path):
    p = tmp_path / "D.h5"
    with writer(p, n=2, compression="none", masks_rad=MASKS[0]) as w:  # (Hm, Wm) → one mask (1, Hm, Wm)
        w.append(objs(2), meas(2)[:, :1])
    with h5py.File(p, "r") as f:
        assert f["masks"].shape == (1, MH, MW) and f["measurements"].compression is None
        assert f.attrs["compression"] == "none" and "mask_amplitude" not in f
        np.testing.assert_array_equal(f["measurements"][...], meas(2).numpy()[:, :1])


def test_journal_records_and_a_clean_stop(tmp_path):
    p = tmp_path / "D.h5"
    w = writer(p, n=5)
    x, y = objs(3), meas(3)
    w.append(x, y)
    assert w.close() == temporary_name(p)  # not complete: the resumable .tmp stays
    assert w.close() == temporary_name(p)  # closing again changes nothing
    assert journal(p) == [{"open": 0}, {"batch": [0, 3], "crc32": [crc(x.numpy()), crc(y.numpy())]},
                          {"closed": 3}]
    with h5py.File(temporary_name(p), "r") as f:
        assert f.attrs["n_written"] == 3 and not f.attrs["complete"]
    with pytest.raises(LearningError) as exc:
        w.append(objs(1, 3), meas(1, 3))
    assert f"{p}: the writer is closed; create a new one (with resume=True) to continue" in str(exc.value)
    # resume: reopened, journaled, continued from sample 3
    w = writer(p, n=5, resume=True, objects=objs(5))
    assert (w.n_written, w.next_index, w.done) == (3, 3, False)
    w.append(objs(2, 3), meas(2, 3))
    assert w.close() == p
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["objects"][...], objs(5).numpy())
        np.testing.assert_array_equal(f["measurements"][...], meas(5).numpy())
        assert f.attrs["n_written"] == 5 and f.attrs["complete"]


def test_closing_an_unused_writer_writes_nothing(tmp_path):
    p = tmp_path / "D.h5"
    w = writer(p)
    assert w.close() == temporary_name(p)
    assert list(tmp_path.iterdir()) == []


def test_journal_path_names():
    assert journal_path("out/DATA.h5").as_posix() == "out/DATA.h5.tmp.journal"
    assert journal_path("out/DATA.h5.tmp").as_posix() == "out/DATA.h5.tmp.journal"


# -- shards -------------------------------------------------------------------------------------------
def test_shard_covers_its_slice_and_says_so(tmp_path):
    p = tmp_path / "D.h5"
    w = writer(p, n=10, shard=(1, 3))
    assert (w.start, w.stop, w.n, w.next_index) == (3, 6, 3, 3)  # [i·N//n, (i+1)·N//n)
    assert w.final == shard_path(p, 1, 3)
    w.append(objs(3, 3), meas(3, 3))
    assert w.next_index == 6 and w.close() == shard_path(p, 1, 3)
    with h5py.File(shard_path(p, 1, 3), "r") as f:
        assert {k: (int(f.attrs[k]), f.attrs[k].dtype) for k in
                ("shard_index", "shard_count", "sample_offset", "n_samples_total")} == {
            "shard_index": (1, np.int64), "shard_count": (3, np.int64), "sample_offset": (3, np.int64),
            "n_samples_total": (10, np.int64)}
        assert f.attrs["n_samples"] == 3
    last = writer(p, n=10, shard=("2", 3.0))  # numbers as text and floats are taken as integers
    assert (last.start, last.stop) == (6, 10)
    last.close()


@pytest.mark.parametrize("shard, needle", [
    ((1,), "shard must be (index, count); got (1,)"),
    ("ab", "shard must be (index, count); got 'ab'"),
    ((0, 0), "shard (0, 0): need 0 ≤ index < count"),
    ((3, 3), "shard (3, 3): need 0 ≤ index < count"),
    ((-1, 3), "shard (-1, 3): need 0 ≤ index < count"),
    ((0, 6), "shard count 6 exceeds the 5 samples; use at most 5 shards (processes)"),
])
def test_bad_shards_refused(tmp_path, shard, needle):
    with pytest.raises(ShardError) as exc:
        writer(tmp_path / "D.h5", n=5, shard=shard)
    assert needle in str(exc.value)


# -- refusals --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, needle", [
    (dict(n=0), "n_samples must be an integer ≥ 1; got 0"),
    (dict(n=True), "n_samples must be an integer ≥ 1; got True"),
    (dict(n=2.0), "n_samples must be an integer ≥ 1; got 2.0"),
    (dict(seed=-1), "seed must be an integer ≥ 0; got -1"),
    (dict(threads=0), "threads must be an integer ≥ 1; got 0"),
    (dict(measurement_units=""), "measurement_units must be a non-empty string such as 'DN', 'photons', "
                                 "'e-' or 'arb'; got ''"),
    (dict(measurement_units="  "), "got '  '"),
    (dict(measurement_units=3), "got 3"),
    (dict(config_yaml=None), "config_yaml must be a string (the resolved YAML text); got NoneType"),
    (dict(masks_rad=MASKS + 0j), "masks_rad is complex; pass the phase in radians (real)"),
    (dict(masks_rad=np.zeros(4)), "masks_rad has shape (4,); expected (L, Hm, Wm)"),
    (dict(masks_rad=np.zeros((0, 2, 2))), "masks_rad has shape (0, 2, 2); expected (L, Hm, Wm)"),
    (dict(masks_rad=np.full((1, 2, 2), np.inf)), "masks_rad contains NaN or inf"),
    (dict(mask_amplitude=np.ones((L, MH, MW + 1))),
     f"mask_amplitude has shape {(L, MH, MW + 1)} but masks_rad has {(L, MH, MW)}; they describe the same masks"),
    (dict(mask_amplitude=-np.ones((L, MH, MW))), "mask_amplitude has negative values; it is a modulus (≥ 0)"),
    (dict(mask_amplitude=np.full((L, MH, MW), np.nan)), "mask_amplitude contains NaN or inf"),
    (dict(compression="bz"), "compression 'bz' is not one of"),
])
def test_bad_arguments_refused_naming_them(tmp_path, kw, needle):
    kw = dict(kw)  # the parameter dict is shared between runs of the test
    n = kw.pop("n", 5)
    with pytest.raises(LearningError) as exc:
        writer(tmp_path / "D.h5", n=n, **kw)
    assert needle in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_check_int_accepts_numpy_integers_and_the_minimum():
    assert check_int(np.int32(4), "k", 4) == 4 and type(check_int(np.int64(7), "k", 0)) is int
    with pytest.raises(LearningError, match="k must be an integer ≥ 4; got 3"):
        check_int(3, "k", 4)


def test_missing_output_folder_is_named(tmp_path):
    with pytest.raises(OutputFolderError) as exc:
        writer(tmp_path / "no" / "D.h5")
    msg = str(exc.value)
    assert f"the output folder {tmp_path / 'no'} does not exist" in msg and f"mkdir -p {tmp_path / 'no'}" in msg


def test_object_at_checks_and_converts():
    seq = [np.ones((H, W), np.complex128), torch.ones(H, W), torch.ones(H, W + 1, dtype=torch.complex64),
           torch.ones(2, H, W, dtype=torch.complex64), torch.full((H, W), complex(np.nan, 0))]
    x = object_at(seq, 0, None)
    assert x.dtype == torch.complex64 and tuple(x.shape) == (H, W)
    assert object_at(seq, 0, (H, W)).shape == (H, W)
    with pytest.raises(LearningError) as exc:
        object_at(seq, 1, None)
    assert "object 1 has dtype torch.float32; objects must be complex (H, W) tensors" in str(exc.value)
    with pytest.raises(LearningError, match=r"object 2 has shape \(3, 5\); expected \(3, 4\) like object 0"):
        object_at(seq, 2, (H, W))
    with pytest.raises(LearningError, match=r"object 3 has shape \(2, 3, 4\); expected \(H, W\) like object 0"):
        object_at(seq, 3, None)
    with pytest.raises(LearningError, match="object 4 contains NaN or inf"):
        object_at(seq, 4, None)


def test_batches_are_checked_with_the_numbers(tmp_path):
    w = writer(tmp_path / "D.h5", n=4)
    with pytest.raises(LearningError) as exc:
        w.append(objs(2).real, meas(2))
    assert "objects batch has dtype torch.float32 and shape (2, 3, 4); expected a complex (B, H, W) batch" \
        in str(exc.value)
    with pytest.raises(LearningError, match=r"shape \(3, 4\); expected a complex \(B, H, W\) batch"):
        w.append(objs(1)[0], meas(1))
    with pytest.raises(LearningError) as exc:
        w.append(objs(5), meas(5))
    assert "appending 5 samples to a file holding 0 of 4; append at most 4 more (and at least 1)" in str(exc.value)
    with pytest.raises(LearningError, match="append at most 4 more"):
        w.append(objs(0), meas(0))
    for bad in (meas(2) + 0j, meas(2).to(torch.int32), meas(2)[:, 0], meas(3), meas(2)[:, :1]):
        with pytest.raises(LearningError) as exc:
            w.append(objs(2), bad)
        assert f"expected real (B=2, L={L}, Mh, Mw)" in str(exc.value)
    y = meas(2)
    y[1, 0, 0, 0] = float("inf")
    with pytest.raises(LearningError, match=r"samples 0\.\.1 contain NaN or inf"):
        w.append(objs(2), y)
    x = objs(2)
    x[0, 0, 0] = complex(0, np.nan)
    with pytest.raises(LearningError, match=r"samples 0\.\.1 contain NaN or inf"):
        w.append(x, meas(2))
    w.append(objs(1), meas(1))
    with pytest.raises(LearningError) as exc:
        w.append(objs(1)[:, :, :2], meas(1))
    assert "objects of shape (3, 2) appended to a file of objects (3, 4)" in str(exc.value)
    with pytest.raises(LearningError) as exc:
        w.append(objs(1), meas(1)[..., :3])
    assert "measurements of shape (2, 5, 3) appended to a file of measurements (2, 5, 6)" in str(exc.value)
    with pytest.raises(LearningError, match=r"samples 1\.\.2 contain NaN or inf"):
        w.append(objs(2, 1), y)
    w.close()


# -- existing files ----------------------------------------------------------------------------------
def test_existing_final_and_stale_tmp(tmp_path):
    p = tmp_path / "D.h5"
    with writer(p, n=1) as w:
        w.append(objs(1), meas(1))
    with pytest.raises(DatasetExistsError) as exc:
        writer(p, n=1)
    assert (f"{p} already exists; pass overwrite=True (--overwrite) to replace it, or choose another "
            f"output path") in str(exc.value)
    w = writer(p, n=2, overwrite=True)  # the old file stays until the new one is complete
    w.append(objs(1), meas(1))
    assert w.close() == temporary_name(p) and p.exists()
    q = tmp_path / "Q.h5"
    _interrupted(q)
    with pytest.raises(DatasetExistsError) as exc:  # a stale .tmp is never silently discarded
        writer(q, n=4)
    assert (f"{temporary_name(q)} is left from an interrupted run; pass resume=True (--resume) to continue "
            f"it, or overwrite=True (--overwrite) to start again") in str(exc.value)
    w = writer(q, n=4, overwrite=True)  # overwrite discards it and its journal
    assert not temporary_name(q).exists() and not journal_path(q).exists()
    w.close()


def test_a_journal_left_after_the_rename_is_removed(tmp_path):
    p = tmp_path / "D.h5"
    journal_path(p).write_text('{"open": 0}\n')
    writer(p, n=1).close()
    assert not journal_path(p).exists()


def test_resume_finds_the_finished_file_only_when_it_matches(tmp_path):
    p = tmp_path / "D.h5"
    with writer(p, n=2) as w:
        w.append(objs(2), meas(2))
    w = writer(p, n=2, resume=True, objects=objs(2))
    assert (w.done, w.n_written, w.next_index) == (True, 2, 2)
    assert w.object_shape == (H, W) and w.measurement_shape == (L, MH, MW)
    assert w.close() == p and w.close() == p
    for kw in (dict(objects=objs(2, 1)), dict(seed=4), dict(n=3)):
        n = kw.pop("n", 2)
        with pytest.raises(DatasetExistsError, match="already exists"):
            writer(p, n=n, resume=True, **kw)
    with h5py.File(p, "r+") as f:  # an incomplete file at the final name is no finished run
        f.attrs["complete"] = np.bool_(False)
    with pytest.raises(DatasetExistsError):
        writer(p, n=2, resume=True)
    with h5py.File(p, "r+") as f:
        f.attrs["complete"] = np.bool_(True)
        f.attrs["n_written"] = np.int64(1)
    with pytest.raises(DatasetExistsError):
        writer(p, n=2, resume=True)
    with h5py.File(p, "r+") as f:
        del f.attrs["complete"]
        f.attrs["n_written"] = np.int64(2)
    with pytest.raises(DatasetExistsError):
        writer(p, n=2, resume=True)
    p.write_bytes(b"not hdf5")
    with pytest.raises(DatasetExistsError):
        writer(p, n=2, resume=True)


def _interrupted(p, n=4, k=2, **kw):
    w = writer(p, n=n, **kw)
    w.append(objs(k), meas(k))
    w.close()


@pytest.mark.parametrize("kw, needle", [
    (dict(seed=4), "seed: 3 (the file) vs 4 (now)"),
    (dict(n=5), "n_samples: 4 (the file) vs 5 (now)"),
    (dict(software_version="1.0"), "software_version: '9.9' (the file) vs '1.0' (now)"),
    (dict(config_yaml="b: 2\n"), "config_yaml: 'a: 1\\n' (the file) vs 'b: 2\\n' (now)"),
    (dict(compression="lzf"), "compression: 'gzip' (the file) vs 'lzf' (now)"),
    (dict(measurement_units="e-"), "measurement units: 'DN' (the file) vs 'e-' (now)"),
    (dict(masks_rad=MASKS + 1), f"masks differ (file {(L, MH, MW)}, now {(L, MH, MW)})"),
    (dict(masks_rad=MASKS[:1]), f"masks differ (file {(L, MH, MW)}, now {(1, MH, MW)})"),
    (dict(mask_amplitude=np.ones((L, MH, MW))), "mask_amplitude absent in the file, given now"),
    (dict(params={**PARAMS, "n": 4}), "parameter n: 3 (the file) vs 4 (now)"),
    (dict(objects=objs(4, 1)), "object 0 differs from the one in the file"),
])
def test_resume_refuses_other_inputs_naming_the_difference(tmp_path, kw, needle):
    p = tmp_path / "D.h5"
    _interrupted(p)
    kw = dict(kw)  # the parameter dict is shared between runs of the test
    n = kw.pop("n", 4)
    with pytest.raises(ResumeMismatchError) as exc:
        writer(p, n=n, resume=True, **kw)
    msg = str(exc.value)
    assert needle in msg
    assert msg.startswith(f"cannot resume {temporary_name(p)}: it was written with different inputs — ")
    assert msg.endswith("Rerun with the original settings, or pass overwrite=True (--overwrite) to start "
                        "again from scratch")


def test_resume_checks_amplitude_shards_last_object_and_damage(tmp_path):
    p = tmp_path / "A.h5"
    amp = np.ones((L, MH, MW))
    _interrupted(p, mask_amplitude=amp)
    with pytest.raises(ResumeMismatchError, match="mask_amplitude present in the file, not given now"):
        writer(p, n=4, resume=True)
    with pytest.raises(ResumeMismatchError, match="mask_amplitude differs"):
        writer(p, n=4, resume=True, mask_amplitude=amp * 0.5)
    writer(p, n=4, resume=True, mask_amplitude=amp).close()
    # the last written object is compared too (sample k − 1 = 1)
    changed = objs(4).clone()
    changed[1, 0, 0] += 1
    with pytest.raises(ResumeMismatchError, match="object 1 differs"):
        writer(p, n=4, resume=True, mask_amplitude=amp, objects=changed)
    s = tmp_path / "S.h5"
    w = writer(s, n=8, shard=(1, 2))
    w.append(objs(2, 4), meas(2, 4))
    w.close()
    with pytest.raises(ResumeMismatchError, match="object 5 differs"):  # global index start + j
        changed = objs(8).clone()
        changed[5, 0, 0] += 1
        writer(s, n=8, shard=(1, 2), resume=True, objects=changed)
    with h5py.File(temporary_name(shard_path(s, 1, 2)), "r+") as f:
        f.attrs["sample_offset"] = np.int64(3)
    with pytest.raises(ResumeMismatchError, match=r"sample_offset: 3 \(the file\) vs 4 \(now\)"):
        writer(s, n=8, shard=(1, 2), resume=True)
    q = tmp_path / "Q.h5"
    _interrupted(q)
    with h5py.File(temporary_name(q), "r+") as f:
        f.attrs["n_written"] = np.int64(7)
    with pytest.raises(ResumeMismatchError, match=r"n_written = 7 is not in \[0, 4\] \(the file is damaged\)"):
        writer(q, n=4, resume=True)
    with h5py.File(temporary_name(q), "r+") as f:
        f.attrs["n_written"] = np.int64(-1)
        f.attrs["format_version"] = "0"
    with pytest.raises(ResumeMismatchError) as exc:
        writer(q, n=4, resume=True)
    assert "format_version: '0' (the file) vs '1' (now)" in str(exc.value)
    assert "n_written" not in str(exc.value)  # the header differs: the rest is not compared
    with h5py.File(temporary_name(q), "r+") as f:
        f.attrs["format_version"] = "1"
    with pytest.raises(ResumeMismatchError, match=r"n_written = -1 is not in \[0, 4\]"):
        writer(q, n=4, resume=True)
    with h5py.File(temporary_name(q), "r+") as f:
        del f["masks"]
        del f["parameters"]
    with pytest.raises(ResumeMismatchError) as exc:
        writer(q, n=4, resume=True)
    assert "masks missing from the file; parameters missing from the file" in str(exc.value)


def test_resume_with_another_object_shape(tmp_path):
    p = tmp_path / "D.h5"
    _interrupted(p)
    other = torch.ones(4, H, W + 1, dtype=torch.complex64)
    with pytest.raises(ResumeMismatchError, match=r"object shape: \(3, 4\) \(the file\) vs \(3, 5\) \(now\)"):
        writer(p, n=4, resume=True, objects=other)


def test_old_tmp_without_journal_that_cannot_be_opened(tmp_path):
    p = tmp_path / "D.h5"
    temporary_name(p).write_bytes(b"garbage, not HDF5")
    with pytest.raises(ResumeMismatchError) as exc:
        writer(p, resume=True)
    msg = str(exc.value)
    assert f"cannot open the interrupted file {temporary_name(p)}" in msg
    assert "pass overwrite=True (--overwrite) to start again" in msg


# -- hard kills: salvage ----------------------------------------------------------------------------------
def _hard_killed(p, batches=(2, 2), n=6):
    """A .tmp whose journal lacks the closing record, as a SIGKILL leaves it."""
    w = writer(p, n=n)
    k = 0
    for b in batches:
        w.append(objs(b, k), meas(b, k))
        k += b
    w.close()
    lines = journal_path(p).read_text().splitlines()
    assert json.loads(lines[-1]) == {"closed": k}
    journal_path(p).write_text("\n".join(lines[:-1]) + "\n" + '{"batch": [4, 6], "crc')  # + a torn last line


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_salvage_copies_the_verified_batches(tmp_path, caplog, compression):
    p = tmp_path / "D.h5"
    w = writer(p, n=6, compression=compression)
    w.append(objs(2), meas(2))
    w.append(objs(2, 2), meas(2, 2))
    w.close()
    lines = journal_path(p).read_text().splitlines()[:-1]
    journal_path(p).write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="learning.h5io.writer"):
        w = writer(p, n=6, resume=True, compression=compression)
    assert (w.n_written, w.next_index) == (4, 4)
    assert f"{temporary_name(p)} was left by a hard interruption: 4 of its 6 samples recovered " \
           f"(checksums verified); continuing from sample 4" in caplog.text
    assert not temporary_name(p).with_name("D.h5.tmp.salvage").exists()
    w.append(objs(2, 4), meas(2, 4))
    assert w.close() == p
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["objects"][...], objs(6).numpy())
        np.testing.assert_array_equal(f["measurements"][...], meas(6).numpy())
        if compression == "gzip":
            assert f["objects"].compression == "gzip"


def test_salvage_stops_at_a_gap_or_a_bad_checksum(tmp_path, caplog):
    p = tmp_path / "D.h5"
    _hard_killed(p)
    recs = [json.loads(s) for s in journal_path(p).read_text().splitlines()[:-1]]  # without the torn line
    # records: open, batch [0, 2], batch [2, 4]; make the second one start at 3 (a gap)
    recs[2]["batch"] = [3, 4]
    journal_path(p).write_text("".join(json.dumps(r) + "\n" for r in recs))
    w = writer(p, n=6, resume=True)
    assert w.n_written == 2
    w.close()
    # the salvage rewrites the journal with the batches it used, then the session logs open/closed
    assert journal(p) == [recs[1], {"closed": 2}, {"open": 2}, {"closed": 2}]
    q = tmp_path / "Q.h5"
    _hard_killed(q)
    recs = [json.loads(s) for s in journal_path(q).read_text().splitlines()[:-1]]
    recs[1]["crc32"][0] ^= 1  # the first batch's objects do not match
    journal_path(q).write_text("".join(json.dumps(r) + "\n" for r in recs))
    w = writer(q, n=6, resume=True)
    assert w.n_written == 0
    w.close()
    r = tmp_path / "R.h5"
    _hard_killed(r)
    recs = [json.loads(s) for s in journal_path(r).read_text().splitlines()[:-1]]
    recs[2]["batch"] = [2, 7]  # beyond n
    journal_path(r).write_text("".join(json.dumps(x) + "\n" for x in recs))
    w = writer(r, n=6, resume=True)
    assert w.n_written == 2
    w.close()


def test_salvage_of_an_unreadable_tmp_starts_afresh(tmp_path, caplog):
    p = tmp_path / "D.h5"
    _hard_killed(p)
    temporary_name(p).write_bytes(b"\0" * 100)
    with caplog.at_level(logging.WARNING, logger="learning.h5io.writer"):
        w = writer(p, n=6, resume=True)
    [msg] = [r.getMessage() for r in caplog.records]
    assert msg.startswith(f"{temporary_name(p)} cannot be opened after the interruption (")
    assert "file signature not found" in msg  # h5py's reason, in the parentheses
    assert msg.endswith("); starting it afresh (its content is determined by the inputs)")
    assert w.n_written == 0 and not temporary_name(p).exists() and not journal_path(p).exists()
    w.close()
    q = tmp_path / "Q.h5"
    _hard_killed(q)
    with h5py.File(temporary_name(q), "r+") as f:  # the header is intact, the masks are torn apart
        del f["masks"]
        f.create_group("masks")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="learning.h5io.writer"):
        w = writer(q, n=6, resume=True)
    [msg] = [r.getMessage() for r in caplog.records]
    assert msg.startswith(f"{temporary_name(q)} is damaged beyond its header (")
    assert msg.endswith("); starting it afresh") and "(None)" not in msg  # the reason in the parentheses
    assert w.n_written == 0 and not temporary_name(q).exists() and not journal_path(q).exists()
    w.close()


# -- durability and the kill hook ---------------------------------------------------------------------
def test_durable_writes_fsync_each_batch_and_the_journal(tmp_path, monkeypatch):
    import os as _os
    calls = []
    real = _os.fsync
    monkeypatch.setattr(_os, "fsync", lambda fd: calls.append(fd) or real(fd))
    for durable in (False, True):
        calls.clear()
        p = tmp_path / f"D{durable}.h5"
        with writer(p, n=4, durable=durable, write_behind=False) as w:
            w.append(objs(2), meas(2))
            n_first = len(calls)
            w.append(objs(2, 2), meas(2, 2))
        if durable:
            assert n_first >= 3  # journal "open", the file after the batch, journal "batch"
            assert len(calls) >= 2 * n_first
        else:
            assert calls == []


def test_kill_hook_parses_and_fires_at_the_exact_event(tmp_path, monkeypatch):
    assert CDPWriter._parse_kill(None) is None and CDPWriter._parse_kill("") is None
    assert CDPWriter._parse_kill("chunk:3") == ("chunk", 3)
    assert CDPWriter._parse_kill("flush") == ("flush", 1)
    import os as _os
    import signal
    sent = []
    monkeypatch.setattr(_os, "kill", lambda pid, sig: sent.append((pid, sig)))
    monkeypatch.setenv(KILL_ENV, "chunk:3")
    w = writer(tmp_path / "D.h5", n=4, compression="none", write_behind=False)
    w.append(objs(1), meas(1))  # chunk events 1 (objects), 2 (measurements)
    assert sent == []
    w.append(objs(1, 1), meas(1, 1))  # the third chunk
    assert sent == [(_os.getpid(), signal.SIGKILL)]
    w.append(objs(1, 2), meas(1, 2))
    assert len(sent) == 1  # only at the count-th occurrence
    w.close()
    sent.clear()
    monkeypatch.setenv(KILL_ENV, "chunk")
    w = writer(tmp_path / "E.h5", n=2, write_behind=False)  # gzip: one chunk event per sample
    w.append(objs(2), meas(2))
    assert sent == [(_os.getpid(), signal.SIGKILL)]
    w.close()


# -- salvage edge cases ------------------------------------------------------------------------------------
def _killed_with_batches(p, n, sizes, **kw):
    """Append batches of ``sizes``, close, then drop the closing record (a hard kill's journal);
    returns the journal's records."""
    w = writer(p, n=n, **kw)
    k = 0
    for b in sizes:
        w.append(objs(b, k), meas(b, k))
        k += b
    w.close()
    recs = journal(p)
    assert recs[-1] == {"closed": k}
    return recs[:-1]


def _set_journal(p, recs):
    journal_path(p).write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_salvage_rewrites_the_journal_and_stops_at_a_gap(tmp_path):
    p = tmp_path / "D.h5"
    recs = _killed_with_batches(p, 8, (2, 2, 2))  # open, [0, 2], [2, 4], [4, 6]
    _set_journal(p, recs)
    w = writer(p, n=8, resume=True)
    assert w.n_written == 6
    assert journal(p) == [recs[1], recs[2], recs[3], {"closed": 6}, {"open": 6}]
    w.close()
    q = tmp_path / "Q.h5"
    recs = _killed_with_batches(q, 8, (2, 2, 2))
    _set_journal(q, [recs[0], recs[1], recs[3]])  # [2, 4] lost: [4, 6] (checksums fine) must not follow [0, 2]
    w = writer(q, n=8, resume=True)
    assert w.n_written == 2 and w.next_index == 2
    w.close()
    r = tmp_path / "R.h5"
    recs = _killed_with_batches(r, 8, (2, 2))
    empty = {"batch": [2, 2], "crc32": [zlib.crc32(b""), zlib.crc32(b"")]}  # an empty batch is no batch
    _set_journal(r, [recs[0], recs[1], empty, recs[2]])
    w = writer(r, n=8, resume=True)
    assert w.n_written == 2
    w.close()


def test_salvage_of_a_file_killed_after_its_last_batch(tmp_path):
    p = tmp_path / "D.h5"
    w = writer(p, n=4, write_behind=False)
    w.append(objs(2), meas(2))
    w.append(objs(2, 2), meas(2, 2))
    w._f.close()  # the process dies here: every sample journaled, the file neither closed nor renamed
    w._f = None
    assert w.close() == temporary_name(p) and "closed" not in journal(p)[-1]
    w = writer(p, n=4, resume=True)
    assert (w.n_written, w.done) == (4, True)
    assert w.close() == p
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["measurements"][...], meas(4).numpy())
        assert f.attrs["complete"]


def test_salvage_stops_at_a_chunk_that_cannot_be_read(tmp_path):
    p = tmp_path / "D.h5"
    _set_journal(p, _killed_with_batches(p, 6, (2, 2)))
    with h5py.File(temporary_name(p), "r") as f:
        info = f["measurements"].id.get_chunk_info_by_coord((2, 0, 0, 0))
    with open(temporary_name(p), "r+b") as fh:  # garble sample 2's compressed measurement chunk
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)
    w = writer(p, n=6, resume=True)
    assert w.n_written == 2 and journal(p)[-2:] == [{"closed": 2}, {"open": 2}]
    w.append(objs(4, 2), meas(4, 2))
    assert w.close() == p
    with h5py.File(p, "r") as f:
        np.testing.assert_array_equal(f["measurements"][...], meas(6).numpy())


def test_salvaged_file_is_checked_against_the_new_inputs(tmp_path):
    p = tmp_path / "D.h5"
    _set_journal(p, _killed_with_batches(p, 4, (2,)))
    with pytest.raises(ResumeMismatchError, match=r"seed: 3 \(the file\) vs 4 \(now\)"):
        writer(p, n=4, resume=True, seed=4)


def test_salvage_without_durable_does_not_fsync(tmp_path, monkeypatch):
    import os as _os
    p = tmp_path / "D.h5"
    _set_journal(p, _killed_with_batches(p, 4, (2,)))
    calls = []
    monkeypatch.setattr(_os, "fsync", lambda fd: calls.append(fd))
    writer(p, n=4, resume=True, durable=False).close()
    assert calls == []


def test_kill_hook_fires_during_the_salvage(tmp_path, monkeypatch):
    import os as _os
    import signal
    p = tmp_path / "D.h5"
    _set_journal(p, _killed_with_batches(p, 6, (2, 2)))
    sent = []
    monkeypatch.setattr(_os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.setenv(KILL_ENV, "salvage:2")
    w = writer(p, n=6, resume=True)
    assert sent == [signal.SIGKILL] and w.n_written == 4  # after the second salvaged batch
    w.close()


def test_object_tensors_that_require_grad_are_accepted():
    x = objs(1)[0].clone().requires_grad_(True)
    got = object_at([x], 0, (H, W))
    assert not got.requires_grad
    np.testing.assert_array_equal(got.numpy(), objs(1)[0].numpy())


def test_resume_object_checks_at_zero_one_and_a_reshaped_last_object(tmp_path):
    p = tmp_path / "D.h5"
    recs = _killed_with_batches(p, 6, (2,))
    recs[1]["crc32"][0] ^= 1  # nothing salvageable: the resumed file holds 0 samples
    _set_journal(p, recs)
    w = writer(p, n=6, resume=True, objects=objs(6))  # nothing to compare yet: accepted
    assert w.n_written == 0
    w.close()
    q = tmp_path / "Q.h5"
    _interrupted(q, n=4, k=1)
    with pytest.raises(ResumeMismatchError, match="object 0 differs"):  # one sample: it is compared
        writer(q, n=4, resume=True, objects=objs(4, 1))
    r = tmp_path / "R.h5"
    _interrupted(r, n=4, k=2)
    seq = [objs(1)[0], torch.ones(H, W + 1, dtype=torch.complex64)]  # object 1 reshaped
    with pytest.raises(LearningError, match=r"object 1 has shape \(3, 5\); expected \(3, 4\) like object 0"):
        writer(r, n=4, resume=True, objects=seq)


def test_durable_salvage_flushes_the_recovered_file_and_its_folder(tmp_path, monkeypatch):
    import os as _os
    p = tmp_path / "D.h5"
    _set_journal(p, _killed_with_batches(p, 4, (2,)))
    synced = []
    real = _os.fsync

    def spy(fd):
        synced.append(_os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)
    monkeypatch.setattr(_os, "fsync", spy)
    writer(p, n=4, resume=True, durable=True).close()
    assert str(tmp_path / "D.h5.tmp.salvage") in synced and str(tmp_path) in synced
