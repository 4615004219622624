"""Exception types of :mod:`learning`.

Every exception here is a :class:`ValueError` (bad input, bad file, bad configuration), so a
caller can catch ``ValueError`` or, more precisely, :class:`LearningError`. Messages name the
problem (the file, dataset, key or value), what was expected, and the fix.

Hierarchy::

    LearningError(ValueError)
    ├── SolverError                 bad input to a solver (measurements, operator, options)
    ├── DenoiserError               bad input to a denoiser, or its optional library is missing
    ├── MetricError                 bad input to a metric (shapes, data range, zero reference)
    ├── SystemsError                a learning system (coded physics, first estimate) is misconfigured
    ├── ImageSourceError            an image source cannot be read or is malformed
    ├── EncodingError               images cannot be turned into complex objects
    ├── ParamsError                 a parameter tree cannot be stored as HDF5 attributes
    ├── SimulationOutputError       the ``simulate`` callable returned the wrong shape/values
    ├── DatasetExistsError          output exists and overwrite was not asked (also FileExistsError)
    ├── OutputFolderError           the output file's folder does not exist (also FileNotFoundError)
    ├── ResumeMismatchError         an interrupted ``.tmp`` file does not match the new request
    ├── ShardError                  sharding arguments or shard files are inconsistent
    └── DatasetFormatError          a CDP dataset file is not what the format promises
        ├── DatasetNotFoundError    the file does not exist (also FileNotFoundError)
        ├── DatasetVersionError     ``format_version`` missing or not the one this code reads
        └── DatasetIncompleteError  ``complete`` is not True (interrupted run)
"""
from __future__ import annotations


class LearningError(ValueError):
    """Base class of every error raised by :mod:`learning`."""


class SolverError(LearningError):
    """Bad input to a solver: measurement shape/values, operator, constraints or options."""


class DenoiserError(LearningError):
    """Bad input to a denoiser (shape, dtype, noise level), an unknown denoiser name, or a
    denoiser whose optional library is not installed (the message names the pip extra)."""


class MetricError(LearningError):
    """Bad input to a metric: mismatched shapes, missing data range, zero-norm reference."""


class SystemsError(LearningError):
    """A learning system that cannot be built or used as asked; the message names the fix."""


class ImageSourceError(LearningError):
    """An image source (folder, .npy/.npz, HDF5, IDX, embedded) cannot be read or is malformed."""


class EncodingError(LearningError):
    """Images cannot be encoded as complex objects (range, shape or phase-range problem)."""


class ParamsError(LearningError):
    """A parameter tree holds a key or value that cannot be stored as HDF5 attributes."""


class SimulationOutputError(LearningError):
    """The ``simulate`` callable returned a tensor of the wrong shape, dtype or with NaN/inf."""


class DatasetExistsError(LearningError, FileExistsError):
    """The output file exists and overwriting was not requested."""


class OutputFolderError(LearningError, FileNotFoundError):
    """The folder an output file should be written to does not exist."""


class ResumeMismatchError(LearningError):
    """An interrupted ``.tmp`` file cannot be resumed because it was written with other inputs."""


class ShardError(LearningError):
    """Shard arguments are invalid, or shard files are inconsistent, missing or overlapping."""


class DatasetFormatError(LearningError):
    """A CDP dataset file is not HDF5, or lacks / malforms a dataset or attribute of the format."""


class DatasetNotFoundError(DatasetFormatError, FileNotFoundError):
    """The dataset file does not exist."""


class DatasetVersionError(DatasetFormatError):
    """The file's ``format_version`` is missing or is not the one this code reads."""


class DatasetIncompleteError(DatasetFormatError):
    """The file's ``complete`` attribute is not True: the run that wrote it was interrupted."""


__all__ = [
    "LearningError", "SolverError", "DenoiserError", "MetricError", "SystemsError", "ImageSourceError", "EncodingError", "ParamsError",
    "SimulationOutputError", "DatasetExistsError", "OutputFolderError", "ResumeMismatchError", "ShardError",
    "DatasetFormatError", "DatasetNotFoundError", "DatasetVersionError", "DatasetIncompleteError",
]
