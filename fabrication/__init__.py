"""phaseforge.fabrication: designs → SLM bitmaps, DOE height maps and GDSII, with design-rule
checks and round-trip verification. Imports only :mod:`optics`.

* :mod:`fabrication.designs` — a phase map with its grid from design.h5, a CDP dataset, .npy, image;
* :mod:`fabrication.devices` — SLM presets (``data/slm_devices.yaml``) and custom device YAML;
* :mod:`fabrication.slm`, :mod:`fabrication.bitmap` — resampling, placement, carrier, LUT, gray
  levels, 8-bit PNG/BMP and 16-bit PNG, sidecar JSON;
* :mod:`fabrication.doe`, :mod:`fabrication.gds`, :mod:`fabrication.drc` — heights through the
  material, float TIFF, grayscale-lithography PNG, GDSII with merged polygons, level tables,
  design-rule checks with locations and waivers;
* :mod:`fabrication.verify` — re-read the files, rebuild the phase, compare phase and CDPs.
"""
