"""phaseforge.fabrication: SLM bitmaps, DOE height maps, GDSII export, design-rule checks
and round-trip verification of learned masks.

Not yet implemented beyond this package marker; builds on :mod:`optics`.
"""
