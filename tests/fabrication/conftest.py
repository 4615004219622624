"""Shared fixtures: a small custom SLM panel (fast) and designs with known phases."""
import numpy as np
import pytest

from fabrication.designs import PhaseDesign

PANEL_YAML = """
test-panel:
  name: test panel 64 x 48
  width_px: 64
  height_px: 48
  pixel_pitch_m: 8.0e-6
  bit_depth: 8
  phase_range_rad: 6.283185307179586
  file_format: png8
  source: unit test
test-panel-12:
  name: test panel 12-bit
  width_px: 64
  height_px: 48
  pixel_pitch_m: 8.0e-6
  bit_depth: 12
  phase_range_rad: 6.283185307179586
  file_format: png16
  source: unit test
big-panel:
  name: test panel 192 x 128
  width_px: 192
  height_px: 128
  pixel_pitch_m: 8.0e-6
  bit_depth: 8
  phase_range_rad: 6.283185307179586
  file_format: png8
  source: unit test
"""


@pytest.fixture
def device_file(tmp_path):
    p = tmp_path / "devices.yaml"
    p.write_text(PANEL_YAML)
    return p


@pytest.fixture
def lens_design():
    """A smooth (lens-like) 24 x 32 phase map on an 8 µm grid at 633 nm."""
    y, x = np.mgrid[0:24, 0:32]
    ph = ((x - 16) ** 2 + (y - 12) ** 2) * 0.02 + 0.1 * x
    return PhaseDesign(ph, 8e-6, 633e-9, z_m=0.1, method="fraunhofer", source="lens")

