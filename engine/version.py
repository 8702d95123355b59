"""The release of protocol-audit (read by setup.cfg and written into every report)."""

__version__ = "0.1.0"
