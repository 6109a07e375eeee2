"""The low-anomaly warning names the cause the store's records point to: patches too few
pixels at a small ``--size`` (ELPV at 64 px: 49.6% anomalous, at 128 px: 88.7%), or
images with too little contrast for patches of any size."""

from __future__ import annotations

import numpy as np
from nsa.generate import shards
from nsa.generate.anomaly_rate import SMALL_PATCH, USABLE, check_anomaly_rate, likely_cause
from nsa.generate.synthesis import SKIP_REASONS

NAMES = list(SKIP_REASONS)
CHANGE, TOO_SMALL = NAMES.index("no-change"), NAMES.index("region-too-small")
ELPV_64 = {"preset": "elpv", "size": 64}


def _boxes(sides: list[int]) -> np.ndarray:
    """(N, 4, 4) int16 boxes: one square patch of each side (0: none blended)."""
    boxes = np.full((len(sides), 4, 4), -1, np.int16)
    for i, side in enumerate(sides):
        if side:
            boxes[i, 0] = (3, 5, 3 + side, 5 + side + 7)  # the shorter side is `side`
    return boxes


def test_patches_too_few_pixels_blame_the_size_and_suggest_the_presets():
    reason = np.array([0, 0, CHANGE, CHANGE, CHANGE, TOO_SMALL, TOO_SMALL])
    boxes = _boxes([20, 20, SMALL_PATCH - 1, 6, 30, 0, 0])
    why = " ".join(likely_cause(reason, boxes, NAMES, ELPV_64))
    assert "5 stayed normal, 4 of them because their patches were too small at --size 64" \
        in why and f"under {SMALL_PATCH} px" in why
    assert "a larger size makes more anomalies: --size (a pipeline's [generate] size); " \
        "the preset's is 256" in why
    assert "contrast" not in why and "'no-change'" not in why  # no reason codes here


def test_no_change_in_patches_of_fair_size_blames_the_contrast():
    reason = np.array([CHANGE] * 5 + [TOO_SMALL])
    why = " ".join(likely_cause(reason, _boxes([SMALL_PATCH, 15, 20, 30, 6, 0]), NAMES,
                                  ELPV_64))
    assert "6 stayed normal, most often for the reason 'no-change' (5 examples)" in why
    assert "contrast" in why and "--size" not in why


def test_the_size_hint_needs_most_normal_examples_small_and_the_presets_size_to_name_it():
    reason = np.array([CHANGE] * 4)
    boxes = _boxes([6, 6, 20, 20])  # half small: not most
    assert "contrast" in " ".join(likely_cause(reason, boxes, NAMES, ELPV_64))
    why = " ".join(likely_cause(reason, _boxes([6, 6, 6, 20]), NAMES,
                                {"preset": "elpv", "size": 512}))
    assert "at --size 512" in why and "a larger size makes" in why and "preset's is" not in why
    assert likely_cause(np.zeros(3, int), _boxes([20] * 3), NAMES, ELPV_64) == []


def test_the_stores_warning_carries_the_size_hint(tmp_path, capsys):
    path = tmp_path / "s.zarr"
    shards.create_store(path, n=4, height=64, width=64, channels=1, chunk_size=4,
                        attrs={"reasons": NAMES, "settings": ELPV_64})
    store = shards.open_store(path, allow_incomplete=True, mode="r+")
    store.group["labels"][:] = [1, 0, 0, 0]
    store.group["reason"][:] = [0, CHANGE, CHANGE, TOO_SMALL]
    store.group["boxes"][:] = _boxes([20, 8, 9, 0])
    message = check_anomaly_rate(store)
    assert "1 of 4 examples (25.0%)" in message and "at --size 64" in message
    head, *details = capsys.readouterr().err.splitlines()  # one line per part, indented
    assert head == f"warning: {path}: only 1 of 4 examples (25.0%) are anomalous, under 50%"
    assert [line[:2] for line in details] == ["  "] * 3 and details[-1] == f"  {USABLE}"
    assert details[0].startswith("  3 stayed normal, 3 of them because their patches")
    assert "; ".join([head.removeprefix(f"warning: {path}: "),
                      *(line[2:] for line in details)]) == message  # recorded without path
    assert shards.open_store(path, allow_incomplete=True).attrs["warnings"] == [message]
