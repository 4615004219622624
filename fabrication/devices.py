"""SLM device presets (``fabrication/data/slm_devices.yaml``) and custom devices from a user YAML.

A device is the panel the bitmap is written for: resolution, pixel pitch, bit depth, the phase
range the vendor's calibration gives, the file format its driver loads, and where the numbers
come from. A user YAML holds one or more devices with the same keys as the preset file (a
mapping ``key → device``); its devices are looked up before the presets.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional


from . import _io as _v
from .errors import DeviceError

__all__ = ["SLMDevice", "FILE_FORMATS", "load_devices", "get_device", "preset_path", "device_table"]

FILE_FORMATS = ("png8", "bmp8", "png16")
_REQUIRED = ("name", "width_px", "height_px", "pixel_pitch_m", "bit_depth", "phase_range_rad",
             "file_format", "source")
_OPTIONAL = ("calibration_wavelength_m", "fill_factor", "notes")


@dataclass(frozen=True)
class SLMDevice:
    key: str
    name: str
    width_px: int
    height_px: int
    pixel_pitch_m: float
    bit_depth: int
    phase_range_rad: float
    file_format: str
    source: str
    calibration_wavelength_m: Optional[float] = None
    fill_factor: Optional[float] = None
    notes: str = ""

    @property
    def shape(self):
        """Panel shape ``(rows, columns)`` = ``(height_px, width_px)``."""
        return (self.height_px, self.width_px)

    def to_dict(self) -> dict:
        return asdict(self)


def preset_path() -> Path:
    return Path(__file__).with_name("data") / "slm_devices.yaml"


def _device(key: str, d, where: str) -> SLMDevice:
    if not isinstance(d, dict):
        raise DeviceError(f"{where}: device {key!r} must be a mapping of {', '.join(_REQUIRED)}")
    missing = [k for k in _REQUIRED if k not in d]
    unknown = [k for k in d if k not in _REQUIRED + _OPTIONAL]
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
        raise DeviceError(f"{where}: device {key!r}: {'; '.join(parts)} (keys: {', '.join(_REQUIRED + _OPTIONAL)})")
    try:
        w, h, b = int(d["width_px"]), int(d["height_px"]), int(d["bit_depth"])
    except (TypeError, ValueError, OverflowError):
        raise DeviceError(f"{where}: device {key!r}: width_px, height_px, bit_depth must be integers") from None
    if w < 1 or h < 1:
        raise DeviceError(f"{where}: device {key!r}: resolution {w} x {h} must be positive")
    if b not in (8, 10, 12):
        raise DeviceError(f"{where}: device {key!r}: bit_depth {b} is not supported; use 8, 10 or 12")
    fmt = str(d["file_format"])
    if fmt not in FILE_FORMATS:
        raise DeviceError(f"{where}: device {key!r}: file_format {fmt!r} is not one of {FILE_FORMATS}")
    if b > 8 and fmt != "png16":
        raise DeviceError(f"{where}: device {key!r}: a {b}-bit device needs file_format png16")
    try:
        pitch = _v.pitch(f"{key}.pixel_pitch_m", float(d["pixel_pitch_m"]))
        rng = float(d["phase_range_rad"])
        cal = d.get("calibration_wavelength_m")
        cal = None if cal is None else _v.wavelength(f"{key}.calibration_wavelength_m", float(cal))
    except (TypeError, ValueError) as exc:
        raise DeviceError(f"{where}: device {key!r}: {exc}") from None
    if not (math.isfinite(rng) and rng > 0):
        raise DeviceError(f"{where}: device {key!r}: phase_range_rad must be > 0, got {rng!r}")
    ff = d.get("fill_factor")
    try:
        ff = None if ff is None else float(ff)
    except (TypeError, ValueError) as exc:
        raise DeviceError(f"{where}: device {key!r}: fill_factor {ff!r} is not a number ({exc})") from None
    if ff is not None and not 0 < ff <= 1:
        raise DeviceError(f"{where}: device {key!r}: fill_factor {ff!r} must lie in (0, 1]")
    return SLMDevice(key=key, name=str(d["name"]), width_px=w, height_px=h, pixel_pitch_m=pitch, bit_depth=b,
                     phase_range_rad=rng, file_format=fmt, source=str(d["source"]), calibration_wavelength_m=cal,
                     fill_factor=None if ff is None else float(ff), notes=str(d.get("notes") or ""))


def load_devices(path=None) -> Dict[str, SLMDevice]:
    """Devices of a YAML file (default: the presets), keyed by lower-case key."""
    import yaml

    p = Path(path) if path is not None else preset_path()
    if not p.is_file():
        raise DeviceError(f"device file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DeviceError(f"device file {p} is not UTF-8 text ({exc}); is it a devices YAML file?") from None
    except yaml.YAMLError as exc:
        raise DeviceError(f"device file {p} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise DeviceError(f"device file {p} must be a mapping KEY: {{name: …, width_px: …}} of one or more devices")
    return {str(k).lower(): _device(str(k).lower(), v, str(p)) for k, v in data.items()}


def get_device(name, device_file=None) -> SLMDevice:
    """A device by key (case-insensitive; ``_`` and spaces read as ``-``); ``device_file`` devices first."""
    if isinstance(name, SLMDevice):
        return name
    key = str(name).strip().lower().replace("_", "-").replace(" ", "-")
    devices = {}
    if device_file is not None:
        devices.update(load_devices(device_file))
    presets = load_devices()
    for k, v in presets.items():
        devices.setdefault(k, v)
    if key in devices:
        return devices[key]
    raise DeviceError(f"unknown SLM device {name!r}; known: {', '.join(sorted(devices))} — or describe yours "
                      f"in a YAML file (keys as in {preset_path().name}) and pass --device-file")


def device_table() -> str:
    """Markdown table of the presets (README)."""
    rows = ["| key | device | resolution | pitch | bits | format | source |", "|---|---|---|---|---|---|---|"]
    for d in load_devices().values():
        rows.append(f"| `{d.key}` | {d.name} | {d.width_px} × {d.height_px} | {d.pixel_pitch_m * 1e6:g} µm | "
                    f"{d.bit_depth} | {d.file_format} | {d.source} |")
    return "\n".join(rows)
