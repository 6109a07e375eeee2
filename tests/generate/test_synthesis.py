"""NSA synthesis: fidelity to the method, determinism, and errors for bad input."""

import cv2
import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st
from nsa.generate import patches as geometry
from nsa.generate.presets import SettingsError, resolve_settings
from nsa.generate.rng import example_rng
from nsa.generate.shards import label_to_mask
from nsa.generate.synthesis import (
    SKIP_REASONS,
    Example,
    ImageError,
    make_example,
    prepare_sources,
    synthesize,
)
from scipy import stats

from nsa.errors import UserError

ALL_MODES = [
    {},
    {"label_mode": "binary"},
    {"mode": "normal", "label_mode": "intensity"},
    {"mode": "mix", "num_ellipses": 4},
    {"mode": "swap", "same": True, "resize": False, "cutpaste": True, "label_mode": "binary"},
    {"mode": "uniform", "label_mode": "continuous", "shift": False, "resize": False},
    {"mode": "mixed", "label_mode": "continuous", "shift": False, "resize": False},
    {"gamma_params": None, "width_bounds": [[0.05, 0.3], [0.03, 0.1]]},
]


def textured(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    noise = rng.normal(128, 60, (size, size, channels)).astype(np.float32)
    smooth = cv2.GaussianBlur(noise, (0, 0), 1.5).reshape(size, size, channels)
    return np.clip(smooth * 2 - 128, 0, 255).astype(np.uint8)


def object_images(rng: np.random.Generator, n: int, size: int = 64) -> list[np.ndarray]:
    """Dark textured discs on a plain bright background, like bottle or screw photos."""
    yy, xx = np.mgrid[:size, :size]
    images = []
    for _ in range(n):
        image = np.full((size, size, 3), 220, np.uint8)
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 3) ** 2
        image[disc] = (textured(rng, size, 3) // 3)[disc]
        images.append(image)
    return images


@pytest.fixture(scope="module")
def gray_sources():
    rng = np.random.default_rng(0)
    return [textured(rng, 64, 1) for _ in range(6)]


@pytest.fixture(scope="module")
def rgb_sources():
    rng = np.random.default_rng(1)
    return [textured(rng, 48, 3) for _ in range(4)]


def box_union(boxes, shape):
    inside = np.zeros(shape, bool)
    for y0, x0, y1, x1 in boxes:
        inside[y0:y1, x0:x1] = True
    return inside


@pytest.mark.parametrize("overrides", ALL_MODES)
@pytest.mark.parametrize("images", ["gray_sources", "rgb_sources"])
def test_only_the_pasted_boxes_change_and_labels_are_valid(overrides, images, request):
    images = request.getfixturevalue(images)
    settings = resolve_settings("elpv", overrides)
    sources = prepare_sources(images, settings)
    for index in range(25):
        example = make_example(sources, settings, 7, index)
        dest = images[example.dest_index]
        assert example.image.shape == dest.shape and example.image.dtype == np.uint8
        assert example.label.shape == dest.shape[:2] and example.label.dtype == np.float32
        outside = ~box_union(example.boxes, dest.shape[:2])
        assert np.array_equal(example.image[outside], dest[outside])
        assert not example.label[outside].any()
        assert example.label.min() >= 0.0 and example.label.max() <= 1.0
        assert example.image_label == int(example.label.max() > 0)
        assert example.reason in SKIP_REASONS
        assert (example.reason == "") == bool(example.image_label)
        assert len(example.boxes) <= 4
        if settings["label_mode"] == "binary":
            assert set(np.unique(example.label)) <= {0.0, 1.0}


def test_most_examples_of_the_elpv_preset_have_an_anomaly(gray_sources):
    settings = resolve_settings("elpv")
    sources = prepare_sources(gray_sources, settings)
    labels = [make_example(sources, settings, 0, i).image_label for i in range(100)]
    assert sum(labels) >= 60


def test_same_seed_and_index_give_byte_identical_examples(rgb_sources):
    settings = resolve_settings("elpv", {"mode": "mix"})
    sources = prepare_sources(rgb_sources, settings)
    a, b = make_example(sources, settings, 5, 11), make_example(sources, settings, 5, 11)
    assert a.image.tobytes() == b.image.tobytes() and a.label.tobytes() == b.label.tobytes()
    assert (a.boxes, a.reason, a.dest_index, a.source_index) == (
        b.boxes, b.reason, b.dest_index, b.source_index)


def test_an_example_made_into_a_given_array_is_the_same_example(rgb_sources):
    settings = resolve_settings("elpv")
    sources = prepare_sources(rgb_sources, settings)
    row = np.full(sources.shape, 17, np.uint8)  # a shard row that held another image
    for index in range(6):
        into = make_example(sources, settings, 3, index, row)
        anew = make_example(sources, settings, 3, index)
        assert into.image is row and np.array_equal(row, anew.image)
        assert np.array_equal(into.label, anew.label) and into.boxes == anew.boxes


def test_different_indices_give_different_examples(gray_sources):
    settings = resolve_settings("elpv")
    sources = prepare_sources(gray_sources, settings)
    examples = [make_example(sources, settings, 5, i) for i in range(30)]
    anomalous = [e.image.tobytes() for e in examples if e.image_label]
    assert len(anomalous) >= 15 and len(set(anomalous)) == len(anomalous)


def test_source_differs_from_destination_unless_same(gray_sources):
    settings = resolve_settings("elpv")
    sources = prepare_sources(gray_sources, settings)
    pairs = [make_example(sources, settings, 1, i) for i in range(60)]
    assert all(e.dest_index != e.source_index for e in pairs)
    assert len({e.source_index for e in pairs}) == len(gray_sources)
    same = resolve_settings("elpv", {"same": True})
    assert all(make_example(sources, same, 1, i).source_index
               == make_example(sources, same, 1, i).dest_index for i in range(20))


def test_swap_pastes_the_source_pixels_unchanged():
    rng = np.random.default_rng(3)
    dest, src = textured(rng, 64, 3), textured(rng, 64, 3)
    settings = resolve_settings("elpv", {"mode": "swap", "resize": False, "shift": False,
                                         "label_mode": "binary", "num_patches": 1})
    example = synthesize(dest, src, settings, example_rng(0, 0))
    (y0, x0, y1, x1), = example.boxes
    assert example.patches[0].src_box == (y0, x0, y1, x1)
    assert np.array_equal(example.image[y0:y1, x0:x1], src[y0:y1, x0:x1])


def test_uniform_mode_interpolates_and_labels_with_the_factor():
    rng = np.random.default_rng(4)
    dest, src = textured(rng, 64, 1), textured(rng, 64, 1)
    settings = resolve_settings("elpv", {"mode": "uniform", "label_mode": "continuous",
                                         "shift": False, "resize": False, "num_patches": 1})
    example = synthesize(dest, src, settings, example_rng(0, 3))
    values = set(np.unique(example.label)) - {0.0}
    assert len(values) == 1
    factor = values.pop()
    assert 0.05 <= factor <= 0.95
    y0, x0, y1, x1 = example.boxes[0]
    expected = np.floor((1 - factor) * dest[y0:y1, x0:x1] + factor * src[y0:y1, x0:x1].astype(
        np.float64))
    assert np.abs(example.image[y0:y1, x0:x1] - expected).max() <= 1


def test_fpi_poisson_labels_every_changed_pixel_with_one_factor(gray_sources):
    settings = resolve_settings("elpv", {"mode": "mixed", "label_mode": "continuous",
                                         "shift": False, "resize": False})
    sources = prepare_sources(gray_sources, settings)
    factors = []
    for index in range(20):
        example = make_example(sources, settings, 0, index)
        values = set(np.unique(example.label)) - {0.0}
        assert len(values) <= 1
        factors += values
        for record in example.patches:
            if record.reason == "":
                assert record.dest_box == record.src_box  # no shift, no resize
    assert len(set(factors)) >= 5 and all(0.05 <= f <= 0.95 for f in factors)


def test_cutpaste_makes_one_patch_of_the_cutpaste_size(gray_sources):
    settings = resolve_settings("elpv", {"mode": "swap", "same": True, "resize": False,
                                         "cutpaste": True, "num_patches": 4})
    sources = prepare_sources(gray_sources, settings)
    for i in range(30):
        example = make_example(sources, settings, 2, i)
        assert len(example.patches) == 1
        y0, x0, y1, x1 = example.patches[0].src_box
        assert 0.015 <= (y1 - y0) * (x1 - x0) / 64**2 <= 0.16


def test_placements_obey_the_object_and_overlap_minimums():
    rng = np.random.default_rng(5)
    images = object_images(rng, 5)
    settings = resolve_settings("bottle", {"min_object_pct": 0.5, "min_overlap_pct": 0.4})
    sources = prepare_sources(images, settings)
    masks = sources.object_masks
    blended = 0
    for index in range(60):
        example = make_example(sources, settings, 3, index)
        for record in example.patches:
            if record.src_box is None:
                continue
            y0, x0, y1, x1 = record.src_box
            src_object = masks[example.source_index][y0:y1, x0:x1]
            assert src_object.mean() > 0.5
            if record.dest_box is None:
                continue
            d0, e0, d1, e1 = record.dest_box
            moved = geometry.resize(src_object, d1 - d0, e1 - e0).astype(bool)
            both = moved & masks[example.dest_index][d0:d1, e0:e1].astype(bool)
            assert both.sum() / moved.sum() > 0.4
            blended += record.reason == ""
    assert blended >= 30


def test_a_blank_image_gives_an_example_without_anomaly_and_a_reason():
    blank = np.full((64, 64, 3), 220, np.uint8)
    settings = resolve_settings("bottle")
    example = synthesize(blank, blank.copy(), settings, example_rng(0, 0))
    assert isinstance(example, Example)
    assert example.reason == "no-object" and example.image_label == 0
    assert not example.label.any() and np.array_equal(example.image, blank)
    assert example.boxes == []


def test_tiny_regions_are_skipped_with_a_reason():
    rng = np.random.default_rng(6)
    dest, src = textured(rng, 64, 1), textured(rng, 64, 1)
    settings = resolve_settings("elpv", {"width_bounds": [[0.04, 0.04], [0.04, 0.04]],
                                         "resize": False, "num_patches": 1})
    example = synthesize(dest, src, settings, example_rng(0, 0))
    assert example.reason == "region-too-small" and example.boxes == []


def test_a_patch_is_skipped_exactly_when_its_blend_region_is_under_50_pixels(gray_sources):
    settings = resolve_settings("elpv", {"num_patches": 4})
    sources = prepare_sources(gray_sources, settings)
    for index in range(200):
        for record in make_example(sources, settings, 4, index).patches:
            y0, x0, y1, x1 = record.dest_box
            too_small = (y1 - y0 - 2) * (x1 - x0 - 2) < 50
            assert (record.reason == "region-too-small") == too_small


def chi_square_p(observed: np.ndarray, expected_p: np.ndarray) -> float:
    """p-value of a chi-square goodness-of-fit test, merging bins expected below 5."""
    n = observed.sum()
    obs, exp, run_o, run_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected_p * n, strict=True):
        run_o, run_e = run_o + o, run_e + e
        if run_e >= 5:
            obs.append(run_o)
            exp.append(run_e)
            run_o = run_e = 0.0
    obs[-1] += run_o
    exp[-1] += run_e
    return float(stats.chisquare(obs, exp).pvalue)


def half_width_probabilities(side, lo, hi, shape, scale, offset) -> np.ndarray:
    """P(half-width = k) for k = lo..hi under clip(int((offset + Gamma) * side), lo, hi)."""
    cdf = stats.gamma(shape, scale=scale).cdf
    edges = np.arange(lo, hi + 1) / side - offset
    inner = cdf(edges[1:]) - cdf(edges[:-1])
    probs = np.concatenate([[cdf(edges[1])], inner[1:], [1 - cdf(edges[-1])]])
    return probs


@pytest.fixture(scope="module")
def two_thousand_examples(gray_sources):
    settings = resolve_settings("elpv")
    sources = prepare_sources(gray_sources, settings)
    return [make_example(sources, settings, 2022, i) for i in range(2000)]


def test_patch_counts_follow_the_coin_flip_rule(two_thousand_examples):
    counts = np.array([len(e.patches) for e in two_thousand_examples])
    observed = np.bincount(counts, minlength=4)[1:]
    assert chi_square_p(observed, np.array([0.25, 0.5, 0.25])) > 1e-3
    assert counts.mean() == pytest.approx(2.0, abs=0.1)
    blended = np.array([len(e.boxes) for e in two_thousand_examples])
    skipped = np.array([sum(r.reason != "" for r in e.patches) for e in two_thousand_examples])
    assert np.array_equal(blended, counts - skipped)


def test_half_widths_follow_the_clipped_gamma_with_its_offset(two_thousand_examples):
    widths = np.array([w for e in two_thousand_examples for r in e.patches
                       for w in r.half_widths])
    lo, hi = round(0.03 * 64), round(0.4 * 64)
    observed = np.bincount(widths - lo, minlength=hi - lo + 1)
    assert widths.min() >= lo and widths.max() <= hi
    assert chi_square_p(observed, half_width_probabilities(64, lo, hi, 2, 0.05, 0.03)) > 1e-3
    # the test has the power to see a lost offset or a wrong scale
    assert chi_square_p(observed, half_width_probabilities(64, lo, hi, 2, 0.05, 0.0)) < 1e-6
    assert chi_square_p(observed, half_width_probabilities(64, lo, hi, 2, 0.06, 0.03)) < 1e-6


def test_rescale_factors_follow_the_clipped_normal(two_thousand_examples):
    scales = np.array([r.scale for e in two_thousand_examples for r in e.patches
                       if r.scale is not None])
    assert scales.min() == 0.7 and scales.max() == 1.3
    edges = np.linspace(0.7, 1.3, 7)
    cdf = stats.norm(1, 0.5).cdf(edges)
    expected = np.concatenate([[cdf[0]], np.diff(cdf), [1 - cdf[-1]]])
    inner = np.histogram(scales[(scales > 0.7) & (scales < 1.3)], edges)[0]
    observed = np.concatenate([[np.sum(scales == 0.7)], inner, [np.sum(scales == 1.3)]])
    assert chi_square_p(observed, expected) > 1e-3
    flat = np.full(8, 1 / 8)
    assert chi_square_p(observed, flat) < 1e-6


@pytest.mark.parametrize("preset", ["elpv", "bottle", "carpet", "screw", "chestxray"])
def test_many_seeds_never_raise(preset):
    rng = np.random.default_rng(8)
    images = [*object_images(rng, 3, 40), np.full((40, 40, 3), 220, np.uint8)]
    for i, overrides in enumerate([*ALL_MODES[:4], {"gamma_params": None}]):
        settings = resolve_settings(preset, {**overrides, "width_bounds": [[0.03, 0.5],
                                                                           [0.03, 0.5]]})
        sources = prepare_sources(images, settings)
        for index in range(40):
            example = make_example(sources, settings, i, index)
            assert example.reason in SKIP_REASONS


@hypothesis.settings(max_examples=80, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    height=st.integers(17, 72), width=st.integers(17, 72), channels=st.sampled_from([1, 3]),
    mode=st.sampled_from(["normal", "mixed", "mix", "swap", "uniform"]),
    label_mode=st.sampled_from(["binary", "continuous", "intensity", "logistic-intensity"]),
    num_patches=st.integers(1, 4), gamma=st.booleans(), ellipses=st.sampled_from([None, 3]),
    objects=st.booleans(), shift=st.booleans(), resize=st.booleans(), same=st.booleans(),
    cutpaste=st.booleans(), seed=st.integers(0, 2**32 - 1),
)
def test_any_valid_settings_and_image_size_give_a_valid_example(
        height, width, channels, mode, label_mode, num_patches, gamma, ellipses, objects,
        shift, resize, same, cutpaste, seed):
    overrides = {
        "mode": mode, "label_mode": label_mode, "num_patches": num_patches,
        "gamma_params": [2, 0.05, 0.03] if gamma else None, "num_ellipses": ellipses,
        "background": [220, 40] if objects else None, "shift": shift, "resize": resize,
        "same": same, "cutpaste": cutpaste, "width_bounds": [[0.06, 0.45], [0.06, 0.45]],
    }
    rng = np.random.default_rng(seed)
    dest = (object_images(rng, 1, 72)[0] if objects else textured(rng, 72, 3))
    src = textured(rng, 72, 3)
    dest = np.ascontiguousarray(dest[:height, :width, :channels])
    src = np.ascontiguousarray(src[:height, :width, :channels])
    example = synthesize(dest, src, resolve_settings("elpv", overrides), rng)
    outside = ~box_union(example.boxes, (height, width))
    assert np.array_equal(example.image[outside], dest[outside])
    assert not example.label[outside].any()
    assert example.label.min() >= 0.0 and example.label.max() <= 1.0
    assert example.image_label == int(example.label.max() > 0)
    assert example.reason in SKIP_REASONS and len(example.boxes) <= num_patches
    window = example.label_window  # the label is 0 outside it: stores quantise it alone
    in_window = np.zeros((height, width), bool)
    if window is not None:
        in_window[window[0]:window[2], window[1]:window[3]] = True
    assert not example.label[~in_window].any()
    assert np.array_equal(label_to_mask(example.label, window=window or (0,) * 4),
                          label_to_mask(example.label))


@pytest.mark.parametrize("dest,src,message", [
    (np.zeros((64, 64, 1), np.float32), np.zeros((64, 64, 1), np.float32), "uint8"),
    (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8), r"\(H, W, C\)"),
    (np.zeros((64, 64, 2), np.uint8), np.zeros((64, 64, 2), np.uint8), "C = 1 or 3"),
    (np.zeros((64, 64, 1), np.uint8), np.zeros((48, 64, 1), np.uint8), "differ"),
    (np.zeros((64, 64, 1), np.uint8), np.zeros((64, 64, 3), np.uint8), "differ"),
    (np.zeros((12, 12, 1), np.uint8), np.zeros((12, 12, 1), np.uint8), "too small"),
])
def test_bad_images_are_user_errors_naming_the_problem(dest, src, message):
    with pytest.raises(ImageError, match=message):
        synthesize(dest, src, resolve_settings("elpv"), example_rng(0, 0))
    assert issubclass(ImageError, UserError)


def test_prepare_sources_names_the_bad_image():
    images = [np.zeros((32, 32, 1), np.uint8), np.zeros((32, 30, 1), np.uint8)]
    with pytest.raises(ImageError, match="source image 1"):
        prepare_sources(images, resolve_settings("elpv"))


def test_one_image_needs_the_same_setting():
    one = [np.zeros((32, 32, 1), np.uint8)]
    with pytest.raises(ImageError, match="at least 2"):
        prepare_sources(one, resolve_settings("elpv"))
    prepare_sources(one, resolve_settings("elpv", {"same": True}))


def test_incomplete_settings_are_a_settings_error():
    image = np.zeros((32, 32, 1), np.uint8)
    with pytest.raises(SettingsError, match="resolve_settings"):
        synthesize(image, image, {"mode": "mixed"}, example_rng(0, 0))
