"""phaseforge.learning: CDP datasets (HDF5), classical phase-retrieval solvers, recovery
networks, teacher/student training, distillation and metrics.

Builds on :mod:`optics`; never imported by it.
"""
