"""phaseforge — the application layer: CLI ``phaseforge …``, YAML configs, the demo pipeline."""
__version__ = "0.1.0"
