"""Versions of the packages that shape outputs, recorded in every store, run and table."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

_PACKAGES = (
    "nsa-pipeline", "numpy", "scipy", "opencv-python-headless", "scikit-image",
    "zarr", "numcodecs", "ray", "torch", "torchvision", "scikit-learn",
)


def package_versions() -> dict[str, str]:
    """Return ``{package: version}`` for the packages whose versions change results."""
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
