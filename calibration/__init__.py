"""phaseforge.calibration: HDF5 lab captures, camera model (EMVA 1288), registration,
SLM LUT and physical-parameter fitting of the simulator against the bench.

Not yet implemented beyond this package marker; builds on :mod:`optics`.
"""
