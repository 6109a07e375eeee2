"""Stores on an S3 server (moto's, on 127.0.0.1): written by 2 Ray workers, killed with
-9 and resumed byte for byte as a local store of the same seed, verified, trained on, and
the stores of a pipeline."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from nsa.generate import shards
from nsa.generate.generation import generate_store
from nsa.generate.sources import mvtec_source
from nsa.pipelines.config import load_config
from nsa.pipelines.runner import run_pipeline
from nsa.train.checkpoint import CONFIG_FILE, MODEL_FILE
from nsa.train.trainer import TrainConfig, train

from nsa.locations import parse_location
from nsa.shard_index import ShardIndexCache

BIN = Path(sys.executable).parent
CATEGORY = "bottle"
#: 64 px examples that the model can take whole.
AUGMENT = {"rotate": 5, "center_crop": 64, "crop": 64}


def _written(url: str) -> int:
    """Chunks with a checksum (one listing: the checksum objects of the chunks written)."""
    return sum(key.startswith("checksums/c/") for key in parse_location(url).list_keys())


def test_an_s3_store_by_2_ray_workers_killed_and_resumed_equals_a_local_one_and_trains(
        mvtec_root, local_ray, s3_bucket, tmp_path):
    n, chunk = 96, 4
    url = f"{s3_bucket}/runs/killed.zarr"
    command = [str(BIN / "nsa-gen"), "mvtec", "--root", str(mvtec_root), "--category",
               CATEGORY, "--n", str(n), "--out", url, "--size", "64", "--chunk-size",
               str(chunk), "--set", f"augment={json.dumps(AUGMENT)}", "--workers", "2",
               "--no-progress"]
    driver = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _written(url) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # its Ray
        for leftover in Path("/tmp").glob(f"nsa-ray-{driver.pid}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
    assert 2 <= _written(url) < n // chunk // 2, "not killed half-way"
    try:
        shards.open_store(url)
        raise AssertionError("a killed store opened as complete")
    except shards.StoreError as exc:
        assert "incomplete" in str(exc)

    source = mvtec_source(mvtec_root, CATEGORY)
    options = {"n": n, "size": 64, "chunk_size": chunk, "overrides": {"augment": AUGMENT},
               "workers": 2, "progress": False}
    # the killed driver's lock names a dead pid on this host: taken over at once
    assert generate_store(source, url, resume=True, **options) == url
    local = tmp_path / "whole.zarr"
    generate_store(source, local, **options)

    location = parse_location(url)
    files = sorted(str(p.relative_to(local)) for p in local.rglob("*") if p.is_file())
    assert location.list_keys() == files
    fs = location.filesystem()
    for key in files:
        if key != "zarr.json":  # the group's attributes hold the time of creation
            assert fs.cat_file(f"{location.fs_path}/{key}") == (local / key).read_bytes(), key
    s3_attrs = dict(shards.open_store(url).attrs)
    local_attrs = dict(shards.open_store(local).attrs)
    for attrs in (s3_attrs, local_attrs):
        attrs.pop("created")
    assert s3_attrs == local_attrs and s3_attrs["complete"] is True
    assert shards.verify_store(url) == n // chunk
    assert not fs.exists(f"{location.fs_path.rpartition('/')[0]}/.killed.zarr.lock")

    # one loader process: spawned, since this process has used obstore to read the store
    run = train(TrainConfig(shards=[url], out=str(tmp_path / "run"), steps=2, batch_size=8,
                            device="cpu", loader_workers=1, progress=False, predictions=1))
    assert (run / MODEL_FILE).is_file()
    recorded = json.loads((run / CONFIG_FILE).read_text())
    assert [s["path"] for s in recorded["stores"]] == [url]


def _widget_config(path: Path, mvtec_root: Path, out: str, generate: str = "") -> Path:
    """A 1-job pipeline config at ``path``: the bottle images as folder source "widget",
    32 examples of 64 px, 2 training steps on the CPU; ``generate`` adds [generate] keys."""
    category = mvtec_root / CATEGORY
    path.write_text(f"""
out = "{out}"
seeds = [0]

[source]
kind = "folder"
root = "{category / 'train' / 'good'}"
name = "widget"
test_good = "{category / 'test' / 'good'}"
test_defects = ["{category / 'test' / 'broken_large'}"]
test_masks = "{category / 'ground_truth' / 'broken_large'}"

[generate]
preset = "bottle"
n = 32
size = 64
chunk_size = 16
overrides = {{ augment = {{ rotate = 5, center_crop = 64, crop = 64 }} }}
{generate}
[train]
steps = 2
batch_size = 8
device = "cpu"
loader_workers = 0

[evaluate]
max_pictures = 1
""")
    return path


def test_a_pipeline_keeps_its_stores_on_s3(mvtec_root, local_ray, s3_bucket, tmp_path):
    config = _widget_config(tmp_path / "widget.toml", mvtec_root, str(tmp_path / "out"),
                            f'workers = 2\nstores = "{s3_bucket}/nsa"\n')
    (first,) = run_pipeline(load_config(config), progress=False)
    assert first.error is None and first.ran == ["generate", "train", "evaluate"]
    url = f"{s3_bucket}/nsa/widget/seed0.zarr"
    assert shards.open_store(url).complete
    job = tmp_path / "out" / "widget" / "seed0"
    assert not (job / "shards.zarr").exists() and (job / "eval" / "metrics.json").is_file()
    (second,) = run_pipeline(load_config(config), progress=False)
    assert second.ran == []  # the store on S3 is found complete
    parse_location(url).remove()  # gone from the object store: made again, and what follows
    (third,) = run_pipeline(load_config(config), progress=False)
    assert third.ran == ["generate", "train", "evaluate"] and shards.open_store(url).complete


def test_a_pipeline_whose_out_is_on_s3_keeps_everything_there_for_any_machine(
        mvtec_root, local_ray, s3_bucket, tmp_path, monkeypatch):
    """With ``--out s3://...`` the markers, store, run, evaluation, log and summary are in
    the bucket; a machine with none of the local staging folders finds every stage done,
    and one whose evaluation marker is gone evaluates the run it copies down."""
    from nsa.pipelines.cli import app
    from nsa.pipelines.remote_out import staging_root
    from typer.testing import CliRunner

    config = _widget_config(tmp_path / "widget.toml", mvtec_root, str(tmp_path / "not-used"))
    out = f"{s3_bucket}/runs/"
    root = parse_location(f"{s3_bucket}/runs")
    result = CliRunner().invoke(app, ["run", str(config), "--out", out, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "widget/seed0: ran generate, train, evaluate" in result.stdout
    assert f"tables: {s3_bucket}/runs/summary.md and {s3_bucket}/runs/summary.csv" \
        in result.stdout
    keys = set(root.list_keys())
    job = "widget/seed0"
    assert {f"{job}/{name}" for name in ("generate.json", "train.json", "evaluate.json",
                                         f"run/{MODEL_FILE}", f"run/{CONFIG_FILE}",
                                         "eval/metrics.json", "shards.zarr/zarr.json")} <= keys
    assert {"pipeline-log.jsonl", "summary.md", "summary.csv"} <= keys
    assert not (tmp_path / "not-used").exists()
    assert not staging_root(out.rstrip("/")).exists()  # the local copies are gone
    assert shards.open_store(f"{s3_bucket}/runs/{job}/shards.zarr").complete
    fs = root.filesystem()
    metrics = json.loads(fs.cat_file(f"{root.fs_path}/{job}/eval/metrics.json"))
    # the markers name outputs within the job's folder, not the staging copy's paths
    assert json.loads(fs.cat_file(f"{root.fs_path}/{job}/train.json"))["run"] == "run"
    assert json.loads(fs.cat_file(f"{root.fs_path}/{job}/evaluate.json"))["metrics"] == \
        "eval/metrics.json"

    shutil.rmtree(staging_root(out.rstrip("/")), ignore_errors=True)  # as on another machine
    fetched: list[str] = []
    real_get = fs.get_file  # s3fs instances are cached: the pipeline's is this one
    with monkeypatch.context() as spying:
        spying.setattr(fs, "get_file", lambda rpath, lpath, *args, **kwargs: (
            fetched.append(rpath.rsplit(f"{job}/", 1)[-1]),
            real_get(rpath, lpath, *args, **kwargs)))
        (second,) = run_pipeline(load_config(config, out), progress=False)
    assert second.error is None and second.ran == []
    assert second.metrics == metrics
    assert "eval/metrics.json" in fetched
    assert not [key for key in fetched if key.startswith("run/")]  # no model copied down

    shutil.rmtree(staging_root(out.rstrip("/")), ignore_errors=True)
    fs.rm_file(f"{root.fs_path}/{job}/evaluate.json")
    fs.rm_file(f"{root.fs_path}/{job}/eval/metrics.json")
    (third,) = run_pipeline(load_config(config, out), progress=False)
    assert third.error is None and third.ran == ["evaluate"]  # on the run it copied down
    assert third.metrics["mean"] == metrics["mean"]
    assert {f"{job}/evaluate.json", f"{job}/eval/metrics.json"} <= set(root.list_keys())
    log = [json.loads(line) for line in
           fs.cat_file(f"{root.fs_path}/pipeline-log.jsonl").decode().splitlines()]
    assert [(r["stage"], r["ran"]) for r in log] == [
        ("generate", True), ("train", True), ("evaluate", True),
        ("generate", False), ("train", False), ("evaluate", False),
        ("generate", False), ("train", False), ("evaluate", True)]

    # the train-and-evaluate task on a node whose temporary folder is not the driver's
    import tempfile

    from nsa.pipelines.runner import _train_and_evaluate
    from nsa.pipelines.stages import plan_job

    shutil.rmtree(staging_root(out.rstrip("/")), ignore_errors=True)
    fs.rm_file(f"{root.fs_path}/{job}/evaluate.json")
    parsed = load_config(config, out)
    node = tmp_path / "node-tmp"
    node.mkdir()
    with monkeypatch.context() as on_node:
        on_node.setattr(tempfile, "tempdir", str(node))
        passed, fourth, error = _train_and_evaluate(parsed, plan_job(parsed, parsed.jobs()[0]),
                                                    False)
    assert error is None and passed == [("train", False), ("evaluate", True)]
    assert fourth["mean"] == metrics["mean"]
    assert list(node.iterdir()) == []  # its own staging folder, removed whole
    assert not parsed.out.exists()  # the driver's was never made on this node
    assert f"{job}/evaluate.json" in set(root.list_keys())


def test_a_pipeline_whose_stores_or_out_bucket_is_missing_stops_before_any_job(
        mvtec_root, s3_server, tmp_path, monkeypatch):
    import pytest
    from nsa.pipelines.cli import app
    from nsa.pipelines.config import ConfigError
    from typer.testing import CliRunner

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    config = tmp_path / "c.toml"
    text = f"""
out = "{tmp_path / 'out'}"
[source]
kind = "mvtec"
root = "{mvtec_root}"
categories = ["{CATEGORY}"]
[generate]
n = 8
[train]
steps = 1
"""
    config.write_text(text.replace("n = 8", 'n = 8\nstores = "s3://no-such-bucket-nsa/nsa"'))
    with pytest.raises(ConfigError) as error:
        run_pipeline(load_config(config), progress=False)
    assert str(error.value) == (
        f"{config}: [generate] stores: s3://no-such-bucket-nsa/nsa/{CATEGORY}/seed0.zarr: "
        f"bucket 'no-such-bucket-nsa' does not exist on {s3_server}")

    config.write_text(text)
    result = CliRunner().invoke(app, ["run", str(config), "--out", "s3://no-such-bucket-nsa/r",
                                      "--no-progress"])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("error: --out: s3://no-such-bucket-nsa/r: bucket "
                             f"'no-such-bucket-nsa' does not exist on {s3_server}\n")
    assert not (tmp_path / "out").exists()


def _sharded_store(path: Path) -> Path:
    """A complete 48-example 32 px grey store of 6 chunks in 3 shards (so that chunks are
    read as byte ranges of a shard), written through the store API."""
    from nsa.generate.presets import resolve_settings

    n, side, chunk = 48, 32, 8
    settings = resolve_settings("elpv")
    settings["augment"] = {"rotate": 0, "center_crop": None, "crop": None, "vflip": True,
                           "hflip": True}
    shards.create_store(path, n=n, height=side, width=side, channels=1, chunk_size=chunk,
                        shard_chunks=2, attrs={"preset": "elpv", "settings": settings,
                                               "seed": 0, "reasons": [""]})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    rng = np.random.default_rng(0)
    for shard in range(store.n_shards):
        m = 2 * chunk
        store.write_shard(shard, shards.ChunkData(
            images=rng.integers(0, 256, (m, side, side, 1), np.uint8),
            masks=rng.integers(0, 256, (m, side, side, 1), np.uint8),
            labels=rng.integers(0, 2, m, np.uint8), dest_index=np.arange(m, dtype=np.int32),
            source_index=np.arange(m, dtype=np.int32),
            boxes=np.full((m, shards.MAX_PATCHES, 4), -1, np.int16),
            reason=np.zeros(m, np.uint8)))
    store.mark_complete()
    return path


def test_the_trainer_gets_the_same_batches_from_s3_as_from_disk(s3_bucket, tmp_path):
    """Same seed, same store bytes: every batch of two epochs (one resumed half-way) is
    the same from the bucket as from the folder, read in a loader process or in this one;
    each shard's index is fetched once per process, not once per chunk."""
    from nsa.train.data import ShardStream, make_loader, open_training_stores

    local = _sharded_store(tmp_path / "local.zarr")
    url = f"{s3_bucket}/copy.zarr"
    parse_location(url).put((str(f.relative_to(local)), f.read_bytes())
                            for f in sorted(local.rglob("*")) if f.is_file())

    def batches(where: str | Path, processes: int, epoch: int, skip: int) -> list[bytes]:
        dataset = ShardStream(open_training_stores([where]), seed=3, batch_size=4,
                              shuffle_chunks=2, loader_workers=1, processes=processes)
        dataset.set_epoch(epoch, skip)
        return [b["stacked"].numpy().tobytes() for b in make_loader(dataset)]

    for epoch, skip in ((0, 0), (1, 5)):
        disk = batches(local, 1, epoch, skip)
        assert len(disk) == 12 - skip
        assert batches(url, 1, epoch, skip) == disk
        assert batches(url, 0, epoch, skip) == disk

    store = shards.open_store(url)
    assert isinstance(store.group.store, ShardIndexCache)
    for chunk in range(store.n_chunks):
        store.read_chunk(chunk)
    assert len(store.group.store._suffixes) == store.n_shards * len(shards.EXAMPLE_ARRAYS)


def test_an_s3_server_that_stops_while_a_shard_is_written_is_one_line_naming_the_url(
        own_s3_server, monkeypatch):
    import pytest
    import s3fs

    from nsa.errors import OutputError
    from nsa.locations import S3Lock, s3_failures

    endpoint, server = own_s3_server
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's retries: 8 s to give up
    s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True).mkdir("stopping")
    url = "s3://stopping/x.zarr"
    shards.create_store(url, n=16, height=8, width=8, channels=1, chunk_size=8, attrs={})
    store = shards.open_store(url, allow_incomplete=True, mode="r+")
    reader = shards.open_store(url, allow_incomplete=True)  # read as training does
    lock = S3Lock(store.location)
    lock.acquire()
    server.terminate()
    server.wait(timeout=30)
    with pytest.raises(OutputError) as error:  # not "unreadable": the bytes may be fine
        reader.read_chunk(1)
    assert str(error.value).startswith(f"{url}: the S3 endpoint {endpoint} stopped "
                                       "answering while chunk 1 was read (")
    assert "\n" not in str(error.value) and error.value.exit_code == 1
    lock.renew()  # the writer lock's renewal thread: the lock is lost, no traceback
    assert lock.lost == (f"its renewal failed (Could not connect to the endpoint URL: "
                         f'"{endpoint}/stopping/.x.zarr.lock")')
    m = 8  # one shard: one chunk
    data = shards.ChunkData(
        images=np.zeros((m, 8, 8, 1), np.uint8), masks=np.zeros((m, 8, 8, 1), np.uint8),
        labels=np.zeros(m, np.uint8), dest_index=np.zeros(m, np.int32),
        source_index=np.zeros(m, np.int32),
        boxes=np.full((m, shards.MAX_PATCHES, 4), -1, np.int16), reason=np.zeros(m, np.uint8))
    with pytest.raises(OutputError) as error, s3_failures(store.location, "resume it"):
        store.write_shard(0, data)
    assert str(error.value) == (f"{url}: the S3 endpoint {endpoint} stopped answering "
                                "(EndpointConnectionError); resume it")
    assert error.value.exit_code == 1
    with pytest.raises(ZeroDivisionError), s3_failures(store.location):
        raise ZeroDivisionError  # anything else passes unchanged


def test_s3_clients_leave_checking_the_bytes_to_the_chunk_checksums(s3_bucket, tmp_path):
    """No CRC computed for an upload (botocore's default costs a quarter to a third of
    the client's CPU per whole object; every chunk's SHA-256 checks the bytes): the
    headers of the requests s3fs sends to upload a store and remove it; a CRC only where
    S3 requires one (DeleteObjects). Reads go through obstore, which asks for no CRC."""
    from zarr.storage import ObjectStore

    local = _sharded_store(tmp_path / "local.zarr")
    location = parse_location(f"{s3_bucket}/crc.zarr")
    sent: list[tuple[str, str, set[str]]] = []

    def record(request: Any, **_: Any) -> None:  # botocore's before-send event
        sent.append((request.method, request.url, {k.lower() for k in request.headers}))

    fs = location.filesystem()
    fs.s3.meta.events.register("before-send.s3", record)
    location.put((str(f.relative_to(local)), f.read_bytes())
                 for f in sorted(local.rglob("*")) if f.is_file())
    store = shards.open_store(str(location))
    assert isinstance(store.group.store._store, ObjectStore)
    for chunk in range(store.n_chunks):
        store.read_chunk(chunk, verify=True)
    location.remove()

    checksum_headers = {"x-amz-checksum-mode", "x-amz-sdk-checksum-algorithm",
                        "x-amz-checksum-crc32", "x-amz-checksum-crc32c",
                        "x-amz-checksum-crc64nvme", "content-md5"}
    methods = [method for method, _, _ in sent]
    assert methods.count("PUT") == sum(f.is_file() for f in local.rglob("*"))
    for method, url, headers in sent:
        if method in ("PUT", "GET"):
            assert not headers & checksum_headers, (method, url, headers)
    deletes = [headers for method, url, headers in sent if method == "POST" and "delete" in url]
    assert deletes and all(headers & checksum_headers for headers in deletes)
