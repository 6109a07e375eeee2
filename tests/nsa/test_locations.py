"""Store locations: parsing, the S3 writer lock, and S3 problems found before any work
(no credentials, no bucket, no server, another format version), against moto's server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from nsa.generate import shards
from nsa.generate.cli import app as gen_app
from nsa.train.cli import app as train_app
from typer.testing import CliRunner

from nsa import locations
from nsa.locations import LocalLocation, LocationError, S3Location, parse_location


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_paths_and_urls_parse_to_locations(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://minio:9000")
    assert parse_location("runs/x.zarr") == LocalLocation(Path("runs/x.zarr"))
    url = parse_location("s3://bucket/a/b/x.zarr/")
    assert url == S3Location("bucket", "a/b/x.zarr", "http://minio:9000")
    assert str(url) == "s3://bucket/a/b/x.zarr" and url.name == "x.zarr"
    assert parse_location("s3://b/x", endpoint="http://other:1").endpoint == "http://other:1"
    for bad in ("s3://bucket", "s3:///x.zarr", "gs://bucket/x.zarr"):
        with pytest.raises(LocationError, match=r"s3://|supported"):
            parse_location(bad)
    for typo in ("s3:/b/x.zarr", "S3:/b/x.zarr"):  # one slash: not a folder named "s3:"
        with pytest.raises(LocationError, match=r"needs '://'"):
            parse_location(typo)
    assert parse_location("runs/s3:/x.zarr") == LocalLocation(Path("runs/s3:/x.zarr"))


def _small_store(url: str) -> None:
    shards.create_store(url, n=4, height=8, width=8, channels=1, chunk_size=2, attrs={})
    store = shards.open_store(url, allow_incomplete=True, mode="r+")
    for index in range(store.n_chunks):
        store.write_chunk(index, shards.ChunkData(
            images=np.full((2, 8, 8, 1), index, np.uint8), masks=np.zeros((2, 8, 8, 1), np.uint8),
            labels=np.zeros(2, np.uint8), dest_index=np.zeros(2, np.int32),
            source_index=np.zeros(2, np.int32), boxes=np.full((2, 4, 4), -1, np.int16),
            reason=np.zeros(2, np.uint8)))
    store.mark_complete()


def test_a_store_on_s3_is_written_read_verified_and_refused_while_incomplete(s3_bucket):
    url = f"{s3_bucket}/p/x.zarr"
    shards.create_store(url, n=4, height=8, width=8, channels=1, chunk_size=2, attrs={})
    with pytest.raises(shards.StoreError, match=f"^{url}: store is incomplete"):
        shards.open_store(url)
    with pytest.raises(shards.StoreError, match="already exists"):
        shards.create_store(url, n=4, height=8, width=8, channels=1, chunk_size=2, attrs={})
    parse_location(url).remove()
    _small_store(url)
    store = shards.open_store(url)
    assert store.path == url and np.all(store.read_chunk(1).images == 1)
    assert shards.verify_store(url) == 2
    assert store.summary()["bytes"] > 0
    size_line = next(line for line in shards.format_summary(store.summary()).splitlines()
                     if " MB" in line)
    assert size_line.startswith("in the bucket:")  # not "on disk"


def test_what_a_killed_creation_left_on_s3_is_not_a_store_and_is_cleared(s3_bucket):
    url = f"{s3_bucket}/x.zarr"
    location = parse_location(url)
    location.put([("images/zarr.json", b"{}"), ("masks/zarr.json", b"{}")])
    assert location.exists() and not shards.store_exists(url)
    _small_store(url)  # no "already exists"
    assert shards.open_store(url).complete


def _lock_object(location: S3Location, **holder) -> None:
    location.filesystem().pipe_file(locations.S3Lock(location).path, json.dumps(
        {"host": "elsewhere", "pid": 1, "token": "t", "expires": time.time() + 60,
         **holder}).encode())


def test_the_s3_writer_lock_admits_one_writer_and_outlives_no_dead_holder(s3_bucket):
    location = parse_location(f"{s3_bucket}/x.zarr")
    with shards.writer_lock(location) as lock:
        refused = rf"another nsa-gen is writing this store \(pid {os.getpid()} on "
        with pytest.raises(LocationError, match=refused), shards.writer_lock(location):
            pass
        lock.renew()
        lock.check()  # still ours
    assert not location.filesystem().exists(locations.S3Lock(location).path)

    _lock_object(location)  # a live lease held on another host: refused
    with pytest.raises(LocationError, match="pid 1 on elsewhere"), shards.writer_lock(location):
        pass
    _lock_object(location, expires=time.time() - 1)  # lease ran out: taken over
    with shards.writer_lock(location):
        pass
    dead = subprocess.Popen(["true"])
    dead.wait()  # kill -9 on this host: the pid is gone, no need to wait for the lease
    _lock_object(location, host=os.uname().nodename, pid=dead.pid)
    with shards.writer_lock(location) as lock:
        _lock_object(location)  # taken from us (we stalled past our lease)
        lock.renew()
        with pytest.raises(LocationError, match="lost its writer lock"):
            lock.check()


def _gen(out: str, images: Path):
    start = time.monotonic()
    result = CliRunner().invoke(gen_app, ["folder", "--root", str(images), "--preset",
                                          "bottle", "--n", "8", "--out", out, "--no-progress"])
    return result, time.monotonic() - start


def _one_error_line(result, url: str, problem: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {url}: ") and problem in lines[0], \
        result.output


def test_bad_s3_outputs_are_one_line_exit_2_in_seconds_and_leave_nothing(
        s3_bucket, mvtec_root, monkeypatch):
    url = f"{s3_bucket}/x.zarr"
    images = mvtec_root / "bottle" / "train" / "good"
    fs = parse_location(url).filesystem()

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    result, seconds = _gen(url, images)
    _one_error_line(result, url, "no S3 credentials")
    assert seconds < 10
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    result, seconds = _gen(url, images)  # the secret key forgotten
    _one_error_line(result, url, "incomplete S3 credentials (Partial credentials found in "
                    "env, missing: AWS_SECRET_ACCESS_KEY)")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    server = os.environ["AWS_ENDPOINT_URL"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.removeprefix("http://"))
    result, seconds = _gen(url, images)
    _one_error_line(result, url, f"AWS_ENDPOINT_URL {server.removeprefix('http://')!r} "
                    "needs http:// or https://")
    monkeypatch.setenv("AWS_ENDPOINT_URL", server)

    result, seconds = _gen("s3://no-such-bucket-nsa/x.zarr", images)
    _one_error_line(result, "s3://no-such-bucket-nsa/x.zarr",
                    "bucket 'no-such-bucket-nsa' does not exist")
    assert seconds < 10

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    result, seconds = _gen(url, images)
    _one_error_line(result, url, "cannot reach the S3 endpoint http://127.0.0.1:")
    assert seconds < 10
    assert fs.find(s3_bucket.removeprefix("s3://")) == []  # nothing written anywhere


def test_a_store_of_another_format_version_on_s3_is_refused_by_every_reader(s3_bucket,
                                                                          tmp_path):
    url = f"{s3_bucket}/old.zarr"
    _small_store(url)
    group = zarr.open_group(parse_location(url).zarr_store(), mode="r+")
    group.attrs["format_version"] = 99
    expected = f"{url}: store format version 99, this nsa-pipeline reads version"
    for app, args in ((gen_app, ["info", url]), (gen_app, ["verify", url]),
                      (train_app, ["--shards", url, "--out", str(tmp_path / "run"),
                                   "--steps", "1"])):
        result = CliRunner().invoke(app, args)
        _one_error_line(result, url, expected.removeprefix(f"{url}: "))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("app", "args", "option", "url"), [
    ("train", ["--shards", "s3://b/x.zarr", "--out", "s3://b/run"], "--out", "s3://b/run"),
    ("train", ["--resume", "s3:/b/run"], "--resume", "s3:/b/run"),
    ("eval", ["folder", "--good", "g", "--model", "S3://b/run", "--out", "o"], "--model",
     "S3://b/run"),
    ("eval", ["predict", "--images", "i", "--model", "m", "--out", "s3://b/p"], "--out",
     "s3://b/p"),
])
def test_options_that_take_a_local_path_refuse_a_url_in_one_line(tmp_path, monkeypatch, capsys,
                                                                  app, args, option, url):
    from nsa.evaluate.cli import app as eval_app

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        (eval_app if app == "eval" else train_app)(args=args, prog_name="prog")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: Invalid value for '{option}': '{url}' is a URL; this option takes a local path")
    assert list(tmp_path.iterdir()) == []  # no folder named s3: or S3:
