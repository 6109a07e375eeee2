"""Fixtures shared by every stage's tests.

- ``isolated_home`` (automatic): ``HOME`` points at an empty temporary directory for the
  whole session, so nothing (Ray, torch, matplotlib caches) can write into the user's home.
- ``mvtec_root``: a tiny MVTec AD-layout tree, built once per session.
- ``local_ray``: one local Ray with 2 CPUs for the tests that use it; code under test
  that enters :func:`nsa.ray_session.ray_session` reuses it instead of starting its own.
- ``s3_server``: moto's standalone S3 server (``moto_server``, the way s3fs tests itself)
  on 127.0.0.1 for the session; ``s3_bucket``: a new bucket on it, with
  ``AWS_ENDPOINT_URL`` pointing there for the test; ``own_s3_server``: another one for a
  test that stops it. Fake credentials are in the
  environment from the start of the session (so Ray workers started by any test have
  them), and no real ones.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

#: Environment variables through which botocore could find real AWS settings.
_AWS_VARIABLES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                  "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")

#: The category of the fixture tree; a real MVTec name so its preset applies.
MVTEC_CATEGORY = "bottle"
MVTEC_SIDE = 64
MVTEC_DEFECT = "broken_large"


@pytest.fixture(scope="session", autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point HOME (and the XDG cache) at an empty directory for the session."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        patch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
        for name in _AWS_VARIABLES:
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", "testing")  # moto accepts any key
        patch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        patch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # never ask a cloud for a role
        yield home


def _object_image(rng: np.random.Generator, side: int) -> np.ndarray:
    """A dark textured disk (the object) on a plain light background, RGB uint8.

    The bottle preset finds objects as pixels darker than 200 - 60, so object masks work.
    """
    yy, xx = np.mgrid[:side, :side]
    cy, cx = side / 2 + rng.uniform(-3, 3, size=2)
    radius = side * rng.uniform(0.3, 0.36)
    inside = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
    image = np.full((side, side, 3), 205.0) + rng.normal(0, 2, (side, side, 3))
    stripes = 40 + 25 * np.sin(xx / 3.0 + rng.uniform(0, 6))[..., None] * [1.0, 0.8, 0.6]
    texture = stripes + rng.normal(0, 6, (side, side, 3))
    image[inside] = texture[inside]
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    bgr = image[..., ::-1] if image.ndim == 3 else image
    assert cv2.imwrite(str(path), np.ascontiguousarray(bgr))


@pytest.fixture(scope="session")
def mvtec_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MVTec AD-layout root with one category (``MVTEC_CATEGORY``), 64x64 RGB PNGs.

    ``bottle/train/good``: 6 images; ``test/good``: 3; ``test/broken_large``: 3 with a
    bright scratch on the object, and ``ground_truth/broken_large/NNN_mask.png`` (255 on
    the scratch, 0 elsewhere). Built once per session; do not modify it (copy it).
    """
    root = tmp_path_factory.mktemp("mvtec")
    category = root / MVTEC_CATEGORY
    rng = np.random.default_rng(20220915)
    for split, count in (("train/good", 6), ("test/good", 3)):
        for i in range(count):
            _write_png(category / split / f"{i:03d}.png", _object_image(rng, MVTEC_SIDE))
    for i in range(3):
        image = _object_image(rng, MVTEC_SIDE)
        mask = np.zeros((MVTEC_SIDE, MVTEC_SIDE), np.uint8)
        y, x = 24 + 4 * i, 20 + 2 * i
        cv2.line(mask, (x, y), (x + 18, y + 10), 255, thickness=3)
        image[mask > 0] = (250, 240, 230)
        _write_png(category / "test" / MVTEC_DEFECT / f"{i:03d}.png", image)
        _write_png(category / "ground_truth" / MVTEC_DEFECT / f"{i:03d}_mask.png", mask)
    return root


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """One local Ray (2 CPUs) for the session; ``ray_session`` calls inside reuse it."""
    from nsa.ray_session import ray_session

    with ray_session(None, num_cpus=2):
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def _moto_server() -> Iterator[tuple[str, subprocess.Popen]]:
    """moto's S3 server on 127.0.0.1 at a free port: (endpoint, process)."""
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, "moto_server exited"
                assert time.monotonic() < deadline, "moto_server did not start in 60 s"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", server
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 at a free port for the session; yields its endpoint."""
    with _moto_server() as (endpoint, _):
        yield endpoint


@pytest.fixture
def own_s3_server() -> Iterator[tuple[str, subprocess.Popen]]:
    """A moto S3 server for one test, which may stop it: (endpoint, its process)."""
    with _moto_server() as started:
        yield started


@pytest.fixture
def s3_bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on ``s3_server``, as ``s3://NAME``; ``AWS_ENDPOINT_URL`` points
    at the server for the test."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    name = f"nsa-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(endpoint_url=s3_server, skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"
