"""Stage hashes hold exactly what changes a stage's outputs (no job runs here)."""

from __future__ import annotations

from pathlib import Path

from nsa.pipelines import stages
from nsa.pipelines.config import load_config
from nsa.pipelines.markers import settings_hash
from nsa.pipelines.stages import plan_job


def hashes(path: Path, text: str | None = None) -> dict[str, str]:
    """The stage hashes of the job bottle/seed0 of the config at ``path``."""
    if text is not None:
        path.write_text(text)
    config = load_config(path)
    (job,) = [job for job in config.jobs() if job.name == "bottle/seed0"]
    return plan_job(config, job).hashes


def test_removing_a_category_or_changing_workers_keeps_every_hash(tiny_config, tmp_path):
    both = hashes(tiny_config(tmp_path / "a.toml", tmp_path, tmp_path / "o"))
    one = hashes(tiny_config(tmp_path / "b.toml", tmp_path, tmp_path / "o",
                             categories=("bottle",), workers=2))
    assert one == both


def test_a_train_option_changes_the_train_and_evaluate_hashes_only(tiny_config, tmp_path):
    before = hashes(tiny_config(tmp_path / "a.toml", tmp_path, tmp_path / "o"))
    after = hashes(tiny_config(tmp_path / "b.toml", tmp_path, tmp_path / "o", steps=3))
    assert after["generate"] == before["generate"]
    assert after["train"] != before["train"] and after["evaluate"] != before["evaluate"]


def test_generation_inputs_change_every_hash(tiny_config, tmp_path):
    before = hashes(tiny_config(tmp_path / "a.toml", tmp_path, tmp_path / "o"))
    path = tiny_config(tmp_path / "b.toml", tmp_path, tmp_path / "o")
    text = path.read_text()
    for old, new in [("n = 32", "n = 48"), ("size = 64", "size = 96"),
                     ("chunk_size = 16", "chunk_size = 8"), ("rotate = 5", "rotate = 6"),
                     (f'root = "{tmp_path}"', f'root = "{tmp_path / "other"}"')]:
        after = hashes(path, text.replace(old, new))
        assert all(after[s] != before[s] for s in before), (old, new)


def test_a_new_store_format_version_changes_every_hash(tiny_config, tmp_path, monkeypatch):
    """So a pipeline regenerates its stores made by a version of nsa-pipeline that wrote an
    older format (a fresh stage overwrites; a finished one would be refused on reading)."""
    path = tiny_config(tmp_path / "a.toml", tmp_path, tmp_path / "o")
    before = hashes(path)
    monkeypatch.setattr(stages, "FORMAT_VERSION", stages.FORMAT_VERSION - 1)
    after = hashes(path)
    assert all(after[s] != before[s] for s in before)


def test_options_that_change_only_speed_or_place_keep_every_hash(tiny_config, tmp_path):
    path = tiny_config(tmp_path / "a.toml", tmp_path, tmp_path / "o")
    text = path.read_text()
    before = hashes(path)
    for old, new in [('device = "cpu"', 'device = "auto"\nthreads = 2\ncheckpoint_every = 7'),
                     ("max_pictures = 1", 'max_pictures = 1\ndevice = "cpu"\nbatch_size = 3'),
                     ("workers = 1", "workers = 1\nn_by_category = { zipper = 99 }"),
                     ("batch_size = 8", "batch_size = 8\nlr = 0.001")]:  # lr's default
        assert hashes(path, text.replace(old, new)) == before, (old, new)


def test_the_protocol_changes_the_evaluate_hash_only(tiny_config, tmp_path):
    before = hashes(tiny_config(tmp_path / "a.toml", tmp_path, tmp_path / "o"))
    after = hashes(tiny_config(tmp_path / "b.toml", tmp_path, tmp_path / "o",
                               protocol="mvtec"))
    assert after["train"] == before["train"] and after["evaluate"] != before["evaluate"]


#: What the train hash of the tiny config's jobs held before ``final_layer`` existed
#: (every hashed TrainConfig setting then, at the values the config gives).
TINY_TRAIN_SETTINGS_BEFORE_FINAL_LAYER = {
    "epochs": None, "steps": 2, "batch_size": 8, "lr": 0.001, "min_lr": 1e-06, "seed": 0,
    "loader_workers": 0, "shuffle_chunks": 8, "log_every": 10, "predictions": 4,
    "workers": 1, "loader_streams": None,
}


def test_final_layer_enters_the_train_hash_only_when_not_the_default(tiny_config, tmp_path):
    path = tiny_config(tmp_path / "a.toml", tmp_path, tmp_path / "o")
    text = path.read_text()
    before = hashes(path)
    # pipeline folders made before the setting existed keep their train hash
    assert before["train"] == settings_hash(
        {"generate": before["generate"], **TINY_TRAIN_SETTINGS_BEFORE_FINAL_LAYER})
    named = hashes(path, text.replace("[train]\n", '[train]\nfinal_layer = "resize-conv"\n'))
    assert named == before
    after = hashes(path, text.replace("[train]\n", '[train]\nfinal_layer = "transposed"\n'))
    assert after["generate"] == before["generate"]
    assert after["train"] != before["train"] and after["evaluate"] != before["evaluate"]
    config = load_config(path)
    assert plan_job(config, config.jobs()[0]).train["final_layer"] == "transposed"
