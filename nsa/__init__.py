"""nsa-pipeline: NSA synthetic anomalies, generated in parallel, trained on, and evaluated."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nsa-pipeline")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
