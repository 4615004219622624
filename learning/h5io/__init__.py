"""The one reader/writer of CDP (coded diffraction pattern) dataset files.

File layout, ``format_version`` "1"
===================================
One HDF5 file (written with ``libver="earliest"``, readable by HDF5 ≥ 1.8; files written by
phaseforge ≤ 0.1.0 with ``libver="v110"`` read the same)::

    /                                 root attributes:
        format_version    str   "1"
        software          str   "phaseforge"
        software_version  str   version of the software that wrote the file
        seed              int   the run's seed (per-sample generators derive from it, see below)
        n_samples         int   N, samples in this file
        n_written         int   samples written so far (updated after every batch; = N when done)
        complete          bool  True once every sample is written — set last
        config_yaml       str   the fully resolved config of the run ("" if none)
        rng               str   how the per-sample generators are seeded
        compression       str   "gzip" | "lzf" | "zstd" | "none" (absent in files written by
                                phaseforge ≤ 0.1.0: "gzip")
      (shard files only)
        shard_index       int   i
        shard_count       int   n
        sample_offset     int   first global sample index of this shard, i·N_total // n
        n_samples_total   int   N_total, samples of the whole (unsharded) dataset
      (merged files only)
        merged_from       str[] shard files, relative to the merged file's folder

    /objects          (N, H, W)       complex64  units "1"     chunks (1, H, W)
    /measurements     (N, L, Mh, Mw)  float32    units "DN" | "photons" | "e-" | "arb" | …
                                                           chunks (1, L, Mh, Mw)
    /masks            (L, Hm, Wm)     float32    units "rad"   the phase of each modulation M_l
    /mask_amplitude   (L, Hm, Wm)     float32    units "1"     only when |M_l| is not 1
                                                               (e.g. octanary masks)
    /parameters/…     groups and attributes: the ``params`` tree (see below)

Every dataset also has an ``axes`` attribute naming its axes (``"sample,y,x"``,
``"sample,mask,y,x"``, ``"mask,y,x"``). Storage: one sample (or one mask) per chunk, byte
shuffle (it helps float data) + the file's compression (:mod:`learning.h5io.compression`):
gzip level 4 by default because every HDF5 reader has it; lzf and zstd (``hdf5plugin``) are
faster. In a merged file ``objects`` and ``measurements`` are HDF5 virtual
datasets over the shard files (relative paths: keep the shards next to the merged file).

The model: ``measurements[n, l] = simulate(objects[n])[l]``, e.g. ``|P(M_l ⊙ x_n)|²`` plus noise,
with ``M_l = mask_amplitude[l] · exp(i·masks[l])``.

Parameters and units
--------------------
``params`` is a nested dict stored under ``/parameters`` with a ``<name>__units`` sibling for
every unit-suffixed name (``wavelength_m`` → ``wavelength_m__units = "m"``); the codec and the
suffix table are in :mod:`learning.h5io.attrs`.

Randomness
----------
Sample ``i`` (global index, also in shard files) draws from its own generator
:func:`sample_generator` ``(seed, i)`` (:mod:`learning.h5io.rng`), so a file's content does not
depend on batch size, on resumption, on sharding or on threads.

Package layout:

``format``
    constants, validation, :func:`open_cdp_file` and the readers
``attrs``
    the parameter/units codec
``compression``
    compression choices, chunk encoding, filter-availability check
``rng``
    per-sample generators
``writer``
    :class:`CDPWriter`: append batches, atomic completion, resume, crash salvage (the writing protocol is documented there)
``driver``
    :func:`write_cdp_dataset`: a ``simulate(x, generators)`` callback loop over the writer
``shards``
    :func:`shard_from_env`, :func:`merge_shards` (virtual datasets)
``dataset``
    :class:`CDPDataset` (``torch.utils.data.Dataset`` yielding ``(x, y)``)
``physics``
    :func:`physics_from_file` (the operator and the sensor, from the file alone)
"""
from __future__ import annotations

from .attrs import UNIT_SUFFIXES, unit_for
from .compression import (COMPRESSION, COMPRESSION_OPTS, COMPRESSIONS, DEFAULT_COMPRESSION,
                          check_filters)
from .dataset import CDPDataset
from .driver import write_cdp_dataset
from .format import (FORMAT_VERSION, SOFTWARE, open_cdp_file, read_attributes, read_masks,
                     read_params, shard_path, tmp_path)
from .physics import physics_from_file
from .rng import sample_generator, sample_seed
from .shards import merge_shards, shard_from_env
from .writer import CDPWriter, journal_path

__all__ = [
    "FORMAT_VERSION", "SOFTWARE", "UNIT_SUFFIXES", "COMPRESSION", "COMPRESSION_OPTS",
    "COMPRESSIONS", "DEFAULT_COMPRESSION", "write_cdp_dataset", "CDPWriter", "merge_shards",
    "shard_path", "shard_from_env", "tmp_path", "journal_path", "sample_seed", "sample_generator",
    "open_cdp_file", "read_params", "read_masks", "read_attributes", "unit_for", "check_filters",
    "CDPDataset", "physics_from_file",
]
