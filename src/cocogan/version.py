"""The package version, below every layer so any module may import it at the top."""
__version__ = "0.1.0"
