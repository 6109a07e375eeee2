"""A job folder staged from and sent back to a bucket (nsa.pipelines.remote_out), on moto's
S3 server: what goes down, what comes back, and in which order."""

from __future__ import annotations

import json

from nsa.pipelines.remote_out import fetch_files, fetch_job, send_files, send_job

from nsa.locations import parse_location

JOB = "widget/seed0"


def _marker(done: bool) -> bytes:
    return json.dumps({"hash": "h", "done": done}).encode()


def _bucket_with_a_job(s3_bucket: str) -> tuple[str, object]:
    url = f"{s3_bucket}/runs"
    root = parse_location(url)
    root.put([(f"{JOB}/generate.json", _marker(True)), (f"{JOB}/train.json", _marker(False)),
              (f"{JOB}/run/checkpoint.pt", b"ckpt"), (f"{JOB}/run/old.txt", b"old"),
              (f"{JOB}/eval/metrics.json", b"{}"), (f"{JOB}/eval/maps/a.png", b"png"),
              (f"{JOB}/shards.zarr/zarr.json", b"{}")])
    return url, root


def test_a_started_training_comes_down_with_its_checkpoint_and_nothing_else(
        s3_bucket, tmp_path):
    url, _ = _bucket_with_a_job(s3_bucket)
    job = tmp_path / "stage" / JOB
    (job / "stale").mkdir(parents=True)  # left by an earlier run on this machine
    fetched = fetch_job(url, JOB, job)
    files = sorted(p.relative_to(job).as_posix() for p in job.rglob("*") if p.is_file())
    # no evaluate marker: eval/ is not wanted; the store is read where it is
    assert files == ["generate.json", "run/checkpoint.pt", "run/old.txt", "train.json"]
    assert fetched == {"generate": _marker(True), "train": _marker(False), "evaluate": None}
    markers_only = fetch_job(url, JOB, job, outputs=False)
    assert sorted(p.name for p in job.rglob("*") if p.is_file()) == ["generate.json",
                                                                       "train.json"]
    assert markers_only == fetched


def test_a_stage_that_worked_replaces_its_output_folder_then_sends_its_marker(
        s3_bucket, tmp_path, monkeypatch):
    url, root = _bucket_with_a_job(s3_bucket)
    job = tmp_path / JOB
    fetched = fetch_job(url, JOB, job)
    (job / "run" / "old.txt").unlink()
    (job / "run" / "model.pt").write_bytes(b"model")
    (job / "train.json").write_bytes(_marker(True))
    sent: list[str] = []
    fs = root.filesystem()
    real_put = fs.put_file  # s3fs instances are cached: send_job gets this one

    def put_file(lpath, rpath, *args, **kwargs):
        sent.append(rpath.rsplit(f"{JOB}/", 1)[1])
        return real_put(lpath, rpath, *args, **kwargs)

    monkeypatch.setattr(fs, "put_file", put_file)
    assert send_job(url, JOB, job, fetched) == ["train"]  # generate's marker is unchanged
    assert sent[-1] == "train.json" and sorted(sent[:-1]) == ["run/checkpoint.pt",
                                                              "run/model.pt"]
    keys = root.list_keys()
    assert f"{JOB}/run/old.txt" not in keys and f"{JOB}/run/model.pt" in keys
    assert f"{JOB}/eval/maps/a.png" in keys  # evaluation did not run: left as it was
    assert fs.cat_file(f"{root.fs_path}/{JOB}/train.json") == _marker(True)


def test_top_level_files_go_up_and_come_down_when_they_exist(s3_bucket, tmp_path):
    url = f"{s3_bucket}/runs"
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "summary.md").write_text("table")
    assert send_files(url, tmp_path / "up", ["summary.md", "summary.csv"]) == [
        f"{url}/summary.md"]
    (tmp_path / "down").mkdir()
    fetch_files(url, tmp_path / "down", ["summary.md", "pipeline-log.jsonl"])
    assert [p.name for p in (tmp_path / "down").iterdir()] == ["summary.md"]
    assert (tmp_path / "down" / "summary.md").read_text() == "table"


def test_an_unfinished_stage_is_sent_again_though_its_marker_did_not_change(s3_bucket,
                                                                          tmp_path):
    url, root = _bucket_with_a_job(s3_bucket)
    job = tmp_path / JOB
    fetched = fetch_job(url, JOB, job)
    (job / "run" / "checkpoint.pt").write_bytes(b"later")  # interrupted again, further on
    assert send_job(url, JOB, job, fetched) == ["train"]
    assert root.filesystem().cat_file(f"{root.fs_path}/{JOB}/run/checkpoint.pt") == b"later"


def test_a_finished_training_comes_down_without_its_checkpoint(s3_bucket, tmp_path):
    url, root = _bucket_with_a_job(s3_bucket)
    root.put([(f"{JOB}/train.json", _marker(True)), (f"{JOB}/run/model.pt", b"model")])
    job = tmp_path / JOB
    fetch_job(url, JOB, job)
    assert sorted(p.name for p in (job / "run").iterdir()) == ["model.pt", "old.txt"]


def test_an_evaluation_sends_its_folder_and_the_thresholds_it_put_in_the_run(s3_bucket,
                                                                           tmp_path):
    url, root = _bucket_with_a_job(s3_bucket)
    job = tmp_path / JOB
    fetched = fetch_job(url, JOB, job)
    (job / "eval").mkdir()
    (job / "eval" / "metrics.json").write_text('{"new": 1}')
    (job / "run" / "calibration.json").write_text("{}")
    (job / "evaluate.json").write_bytes(_marker(True))
    assert send_job(url, JOB, job, fetched) == ["train", "evaluate"]  # train: unfinished
    keys = root.list_keys()
    assert f"{JOB}/run/calibration.json" in keys
    assert f"{JOB}/eval/maps/a.png" not in keys  # the old evaluation's folder is replaced
    assert root.filesystem().cat_file(f"{root.fs_path}/{JOB}/eval/metrics.json") == b'{"new": 1}'

