"""Calibration: HDF5 lab captures → camera model, registration, SLM phase LUT, fitted physical
parameters, and the CALIBRATION.h5 file the simulator reads back.

Modules (one concern each; imports only :mod:`optics`):

* :mod:`calibration.capture` — the capture-file reader/writer and validator (``capture validate|info|pack``);
* :mod:`calibration.camera` — dark/flat correction and EMVA 1288 photon-transfer analysis → :class:`optics.sensor.Sensor`;
* :mod:`calibration.registration` — subpixel similarity/affine registration with a quality score;
* :mod:`calibration.lut` — gray-level → phase LUT from binary-grating captures;
* :mod:`calibration.fit` — differentiable fit of the near-field CDP forward model to captures (LUT optionally joint);
* :mod:`calibration.calibfile` — the CALIBRATION.h5 writer/reader;
* :mod:`calibration.report` — figures (photon transfer, LUT, registration overlay, residuals).
"""
