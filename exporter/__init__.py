"""Prometheus exporter for Braze KPIs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("braze-exporter")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
