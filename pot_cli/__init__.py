"""pot — Proof of Training."""

__version__ = "0.1.0"
