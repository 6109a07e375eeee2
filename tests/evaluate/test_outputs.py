"""A new nsa-eval output replaces an earlier one in --out, and only it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nsa.evaluate.outputs import MARK_FILE, check_out, replace_output
from nsa.evaluate.predict import predict
from nsa.evaluate.run import evaluate
from nsa.evaluate.testsets import mvtec_testset

from nsa.errors import UserError


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _evaluated_with_six_pictures(trained_run: Path, make_mvtec, tmp_path: Path):
    """The widget test set and an evaluation of it with 6 pictures in tmp_path/out."""
    widget = [mvtec_testset(make_mvtec(tmp_path / "data"), "widget")]
    out = tmp_path / "out"
    evaluate(widget, trained_run, out, max_pictures=6, progress=False)
    assert len(_files(out / "maps")) == 6
    return widget, out


def test_re_evaluating_with_fewer_pictures_leaves_exactly_the_new_ones_and_the_users_file(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    widget, out = _evaluated_with_six_pictures(trained_run, make_mvtec, tmp_path)
    (out / "notes.txt").write_text("mine")
    evaluate(widget, trained_run, out, max_pictures=2, progress=False)
    evaluate(widget, trained_run, tmp_path / "fresh", max_pictures=2, progress=False)
    assert _files(out / "maps") == _files(tmp_path / "fresh" / "maps")
    assert len(_files(out / "maps")) == 2
    assert (out / "notes.txt").read_text() == "mine"
    assert _files(out) - {"notes.txt"} == _files(tmp_path / "fresh")


def test_a_finished_output_of_a_version_without_the_mark_is_replaced_too(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    widget, out = _evaluated_with_six_pictures(trained_run, make_mvtec, tmp_path)
    (out / MARK_FILE).unlink()  # as written before the mark existed
    (out / "notes.txt").write_text("mine")
    evaluate(widget, trained_run, out, max_pictures=2, progress=False)
    assert len(_files(out / "maps")) == 2 and (out / "notes.txt").read_text() == "mine"
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.json").write_text(json.dumps({"versions": {"numpy": "2"}}))
    with pytest.raises(UserError, match="not an nsa-eval output"):
        check_out(other)  # a metrics.json that nsa-pipeline did not write


def test_an_interrupted_evaluations_pictures_are_removed_by_the_next_one(
    trained_run: Path, make_mvtec, tmp_path: Path
) -> None:
    root = make_mvtec(tmp_path / "data")
    make_mvtec(tmp_path / "data", "gizmo")
    broken = root / "gizmo" / "test" / "dent" / "001.png"
    image = broken.read_bytes()
    broken.write_bytes(b"not a png at all" * 20)
    out = tmp_path / "out"
    with pytest.raises(UserError, match="not a readable image"):
        evaluate([mvtec_testset(root, "widget"), mvtec_testset(root, "gizmo")], trained_run,
                 out, max_pictures=3, progress=False)
    assert (out / "maps" / "widget").is_dir() and not (out / "metrics.json").exists()
    broken.write_bytes(image)
    evaluate([mvtec_testset(root, "gizmo")], trained_run, out, max_pictures=3, progress=False)
    assert [p.name for p in (out / "maps").iterdir()] == ["gizmo"]
    assert list(json.loads((out / "metrics.json").read_text())["categories"]) == ["gizmo"]


def test_predicting_again_leaves_no_earlier_map_or_mask(
    trained_run: Path, sample_image, write_png, tmp_path: Path
) -> None:
    for i in range(3):
        write_png(tmp_path / "three" / f"img{i}.png", sample_image(i, side=50)[0])
        if i < 2:
            write_png(tmp_path / "two" / f"img{i}.png", sample_image(i, side=50)[0])
    out = tmp_path / "out"
    predict(trained_run, tmp_path / "three", out, threshold=0.0, pixel_threshold=0.0,
            progress=False)
    assert (out / "maps" / "img2_mask.png").is_file()
    predict(trained_run, tmp_path / "two", out, threshold=1.0, pixel_threshold=1.0,
            progress=False)
    assert _files(out / "maps") == {"img0.npy", "img0.png", "img1.npy", "img1.png"}
    assert json.loads((out / MARK_FILE).read_text())["written_by"] == "nsa-eval predict"


def test_only_names_nsa_eval_writes_are_removed_whatever_the_mark_lists(
    tmp_path: Path
) -> None:
    out = tmp_path / "out"
    (tmp_path / "outside").write_text("mine")
    (out / "maps" / "old").mkdir(parents=True)
    (out / "maps" / "old" / "a.png").write_bytes(b"png")
    for name in ("scores.csv", "notes.txt", "metrics.md"):
        (out / name).write_text(name)
    (out / MARK_FILE).write_text(json.dumps(
        {"written_by": "nsa-eval predict", "outputs": ["scores.csv", "maps", "notes.txt",
                                                       "../outside", ".."]}))
    replace_output(out, "evaluate")
    assert sorted(p.name for p in out.iterdir()) == [
        "metrics.md", "notes.txt", MARK_FILE]  # metrics.md was not listed: not removed
    assert (tmp_path / "outside").read_text() == "mine"
    assert json.loads((out / MARK_FILE).read_text())["outputs"][0] == "metrics.json"


@pytest.mark.parametrize("mark", ['{"outputs": 3}', "{", '{"written_by": "nsa-eval"}'])
def test_an_unreadable_mark_is_one_error_naming_it_before_any_work(
    tmp_path: Path, mark: str
) -> None:
    (tmp_path / MARK_FILE).write_text(mark)
    with pytest.raises(UserError, match=f"{MARK_FILE}: .*remove it"):
        check_out(tmp_path)
