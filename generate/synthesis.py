"""Natural Synthetic Anomalies: one training example from two normal images.

:func:`synthesize` implements docs/method.md §Synthesis (and its §Baseline tasks):
patches cut from a source image are rescaled, moved and blended into a destination image,
and the label says per pixel how much each changed. :func:`make_example` is what a shard
writer calls: a pure function of (sources, settings, seed, index), so any worker can make
any example and a resumed run writes the same bytes.

For valid inputs nothing here raises: a patch that cannot be placed is skipped, and an
example without any blended patch has an all-zero label and a ``reason`` from
:data:`SKIP_REASONS`. Invalid inputs raise :class:`~nsa.errors.UserError` subclasses.

Where the authors' release differs from the method as written, we follow the method and
say so: a patch lands exactly on its sampled box (their ``cv2.seamlessClone`` call moves
odd-sized and non-rectangular patches by a pixel or more against the label); the label
region is the union of all patch regions (theirs lets a later patch's box overwrite an
earlier one's mask); Poisson values are rounded, not truncated. The settings
``patch_placement``, ``label_region``, ``rounding`` and ``pairing`` restore the release's
choices (docs/method.md §Deviations). Object masks are not used
with ``same`` or ``cutpaste`` (as in the release). With ``shift`` off, a rescaled patch
keeps its source centre, moved inward where it would cross the border.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from nsa.generate import patches as geometry
from nsa.generate.labels import label_map, label_window
from nsa.generate.objects import object_mask
from nsa.generate.poisson import poisson_blend
from nsa.generate.presets import SynthesisSettings, parse_settings
from nsa.generate.rng import epoch_rng, example_rng

from nsa.errors import UserError

#: Why an example has no anomaly; index 0 (the empty string) means at least one patch
#: was blended and changed some pixels. Shards store the index.
SKIP_REASONS: tuple[str, ...] = ("", "no-object", "no-placement", "region-too-small",
                                 "no-change")
#: A Poisson blending region smaller than this many pixels is skipped (docs/method.md, step 7).
MIN_BLEND_PIXELS = 50


class ImageError(UserError):
    """Images that synthesis cannot use: wrong dtype or shape, mismatched, too small."""


@dataclass
class Example:
    """One synthetic example: the image, its pixel label and how it was made."""

    image: np.ndarray  # (H, W, C) uint8
    label: np.ndarray  # (H, W) float32 in [0, 1]
    image_label: int  # 1 iff some label pixel is positive
    boxes: list[tuple[int, int, int, int]]  # blended patch boxes (y0, x0, y1, x1), <= 4
    reason: str  # "" or why no anomaly was made, one of SKIP_REASONS
    dest_index: int = -1
    source_index: int = -1
    patches: list[geometry.PatchRecord] = field(default_factory=list)  # every attempted patch
    #: (y0, x0, y1, x1) outside which ``label`` is 0, or None when all of it is 0
    label_window: tuple[int, int, int, int] | None = None


def check_image_pair(dest: np.ndarray, src: np.ndarray, settings: dict[str, Any]) -> None:
    """Raise :class:`ImageError` unless both images are equal-shaped (H, W, C) uint8 with
    C in {1, 3} and large enough for the settings' width bounds."""
    for name, image in (("destination", dest), ("source", src)):
        if not isinstance(image, np.ndarray):
            raise ImageError(f"{name} image must be a numpy array, not {type(image).__name__}")
        if image.dtype != np.uint8:
            raise ImageError(f"{name} image must be uint8, not {image.dtype}")
        if image.ndim != 3 or image.shape[2] not in (1, 3):
            raise ImageError(f"{name} image must have shape (H, W, C) with C = 1 or 3, "
                             f"not {image.shape}")
    if dest.shape != src.shape:
        raise ImageError(f"source {src.shape} and destination {dest.shape} images differ "
                         "in size or channels")
    check_image_size(dest.shape[0], dest.shape[1], settings)


def check_image_size(height: int, width: int, settings: dict[str, Any]) -> None:
    """Raise :class:`ImageError` when an image is too small for the width bounds."""
    bounds = geometry.WidthBounds.from_fractions(settings["width_bounds"], height, width)
    if min(bounds.min_h, bounds.min_w) < 1 or height < 8 or width < 8:
        raise ImageError(
            f"images of {height}x{width} pixels are too small for width_bounds "
            f"{settings['width_bounds']}: the smallest half-width rounds to 0 pixels "
            "(use larger images or larger width_bounds minimums)")


def _sum_in(integral: np.ndarray, box: geometry.Box) -> int:
    y0, x0, y1, x1 = box
    return int(integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0])


def _integral(mask: np.ndarray | None) -> np.ndarray | None:
    return None if mask is None else cv2.integral(mask, sdepth=cv2.CV_32S)


class _Synthesizer:
    """Makes one example; holds the per-example state that the patches share."""

    def __init__(self, dest: np.ndarray, src: np.ndarray, p: SynthesisSettings,
                 rng: np.random.Generator, dest_object: np.ndarray | None,
                 src_object: np.ndarray | None, src_integral: np.ndarray | None = None,
                 image_out: np.ndarray | None = None):
        self.dest, self.src, self.p, self.rng = dest, src, p, rng
        self.height, self.width = dest.shape[:2]
        self.bounds = geometry.WidthBounds.from_fractions(p.width_bounds, self.height, self.width)
        self.objects = (p.uses_object_masks
                        and dest_object is not None and src_object is not None)
        self.dest_object = dest_object if self.objects else None
        self.src_object = src_object if self.objects else None
        self.src_integral = (src_integral if src_integral is not None
                             else _integral(self.src_object)) if self.objects else None
        if image_out is None:
            self.result = dest.copy()
        else:  # blended in place there: no second copy of the image
            self.result = image_out
            np.copyto(image_out, dest)
        self.region = np.zeros((self.height, self.width), bool)
        self.boxes: list[geometry.Box] = []
        self.records: list[geometry.PatchRecord] = []
        mode = p.mode
        if mode == "mix":
            mode = ("normal", "mixed")[int(rng.integers(2))]
        self.mode = mode
        self.factor = float(rng.uniform(0.05, 0.95)) if p.label_mode == "continuous" else 1.0

    def run(self) -> Example:
        p = self.p
        attempts = 1 if p.cutpaste else p.num_patches
        for i in range(attempts):
            if i == 0 or self.rng.integers(2) > 0:
                record = geometry.PatchRecord()
                self.records.append(record)
                self._patch(record)
        label = label_map(self.dest, self.result, self.region, self.boxes, p.label_mode,
                          p.tol, p.logistic_params, self.factor)
        image_label = int(bool(label.any()))
        if image_label:
            reason = ""
        elif self.boxes:
            reason = "no-change"
        else:
            reason = next(r.reason for r in self.records if r.reason)
        return Example(image=self.result, label=label, image_label=image_label,
                       boxes=list(self.boxes), reason=reason, patches=self.records,
                       label_window=label_window(self.boxes, self.height, self.width))

    # -- one patch -------------------------------------------------------------------
    def _patch(self, record: geometry.PatchRecord) -> None:
        p, rng, b = self.p, self.rng, self.bounds
        if p.cutpaste:
            box = geometry.cutpaste_box(rng, self.height, self.width)
            shape_mask = np.ones((box[2] - box[0], box[3] - box[1]), np.uint8)
            record.half_widths = ((box[2] - box[0]) // 2, (box[3] - box[1]) // 2)
        else:
            half_h = geometry.sample_half_width(rng, self.height, b.min_h, b.max_h, p.gamma_params)
            half_w = geometry.sample_half_width(rng, self.width, b.min_w, b.max_w, p.gamma_params)
            record.half_widths = (half_h, half_w)
            found = self._source_location(half_h, half_w)
            if found is None:
                record.reason = "no-object"
                return
            box, shape_mask = found
        record.src_box = box
        y0, x0, y1, x1 = box
        patch = self.src[y0:y1, x0:x1]
        src_object = self.src_object[y0:y1, x0:x1] if self.objects else None
        if p.resize:
            scale = float(np.clip(rng.normal(1.0, 0.5), *p.resize_bounds))
            record.scale = scale
            if p.cutpaste:
                limits = (1, self.height - 2, 1, self.width - 2)
            else:
                limits = (b.min_h, b.max_h, b.min_w, b.max_w)
            new_h, new_w = geometry.rescaled_size(scale, y1 - y0, x1 - x0, *limits)
            patch = geometry.resize(patch, new_h, new_w)
            shape_mask = geometry.resize(shape_mask, new_h, new_w)
            if src_object is not None:
                src_object = geometry.resize(src_object, new_h, new_w)
        dest_box = self._placement(box, patch.shape[0], patch.shape[1], shape_mask,
                                   src_object)
        if dest_box is None:
            record.reason = "no-placement"
            return
        record.dest_box = dest_box
        self._blend(record, dest_box, patch, shape_mask, src_object)

    def _source_location(self, half_h: int, half_w: int):
        """Source box and shape mask with enough object, or None after MAX_TRIES."""
        p = self.p
        if self.objects and self.src_integral[-1, -1] == 0:
            return None  # no object anywhere in the source: no try can succeed
        for _ in range(geometry.MAX_TRIES if self.objects else 1):
            box = geometry.source_box(self.rng, self.height, self.width, self.bounds,
                                      half_h, half_w)
            y0, x0, y1, x1 = box
            if p.num_ellipses is not None:
                shape_mask = geometry.ellipse_mask(self.rng, y1 - y0, x1 - x0, p.num_ellipses,
                                            self.bounds, half_h, half_w)
            else:
                shape_mask = np.ones((y1 - y0, x1 - x0), np.uint8)
            if not self.objects:
                return box, shape_mask
            if p.num_ellipses is None:
                area = (y1 - y0) * (x1 - x0)
                covered = _sum_in(self.src_integral, box)
            else:
                area = int(shape_mask.sum())
                covered = int(np.count_nonzero(shape_mask & self.src_object[y0:y1, x0:x1]))
            if area > 0 and covered / area > p.min_object_pct:
                return box, shape_mask
        return None

    def _placement(self, src_box: geometry.Box, h: int, w: int, shape_mask, src_object):
        """Destination box for an (h, w) patch, or None when none is found."""
        p = self.p
        if not p.shift:
            cy = (src_box[0] + src_box[2]) // 2
            cx = (src_box[1] + src_box[3]) // 2
            y0 = min(max(cy - h // 2, 0), self.height - h)
            x0 = min(max(cx - w // 2, 0), self.width - w)
            if y0 < 0 or x0 < 0:
                return None
            return (y0, x0, y0 + h, x0 + w)
        lo_y, hi_y = geometry.centre_range(h, self.height)
        lo_x, hi_x = geometry.centre_range(w, self.width)
        if hi_y <= lo_y or hi_x <= lo_x:
            return None
        if not self.objects:
            return geometry.box_at(int(self.rng.integers(lo_y, hi_y)),
                            int(self.rng.integers(lo_x, hi_x)), h, w)
        src_in_patch = (src_object & shape_mask).astype(bool)
        patch_area = int(shape_mask.sum())
        src_count = int(src_in_patch.sum())
        # the source-object fraction does not depend on the placement: check it once
        if patch_area == 0 or src_count / patch_area <= p.min_object_pct:
            return None
        for _ in range(geometry.MAX_TRIES):
            box = geometry.box_at(int(self.rng.integers(lo_y, hi_y)),
                           int(self.rng.integers(lo_x, hi_x)), h, w)
            y0, x0, y1, x1 = box
            both = np.count_nonzero(src_in_patch & self.dest_object[y0:y1, x0:x1].astype(bool))
            if both / src_count > p.min_overlap_pct:
                return box
        return None

    def _blend(self, record, box: geometry.Box, patch, shape_mask, src_object) -> None:
        y0, x0, y1, x1 = box
        dest_area = self.result[y0:y1, x0:x1]
        if self.objects:
            so = src_object.astype(bool)
            do = self.dest_object[y0:y1, x0:x1].astype(bool)
            region = shape_mask.astype(bool) & (so | do)
            blend_region = region | ~(so | do)  # plain background on both: no seam there
        else:
            region = blend_region = shape_mask.astype(bool)
        mode = self.mode
        if mode == "swap":
            dest_area[region] = patch[region]
        elif mode == "uniform":
            f = self.factor
            mixed = np.floor((1.0 - f) * dest_area + f * patch.astype(np.float64))
            dest_area[region] = mixed.astype(np.uint8)[region]
        else:
            mask = blend_region.astype(np.uint8)
            mask[0, :] = mask[-1, :] = 0
            mask[:, 0] = mask[:, -1] = 0
            if np.count_nonzero(mask) < MIN_BLEND_PIXELS:
                record.reason = "region-too-small"
                return
            # the authors pass the factor to OpenCV as a mask value of ceil(255 f)
            weight = math.ceil(self.factor * 255) / 255
            truncate = self.p.rounding == "truncate"
            if self.p.patch_placement == "box":
                dest_area[...] = poisson_blend(dest_area, patch, mask, mode == "mixed",
                                               weight, truncate)
            else:
                (py0, px0, py1, px1), (dy0, dx0, dy1, dx1) = geometry.clone_boxes(box, mask)
                window = self.result[dy0:dy1, dx0:dx1]
                window[...] = poisson_blend(window, patch[py0:py1, px0:px1],
                                            mask[py0:py1, px0:px1], mode == "mixed",
                                            weight, truncate)
        if self.p.label_region == "overwrite":
            self.region[y0:y1, x0:x1] = region
        else:
            self.region[y0:y1, x0:x1] |= region
        self.boxes.append(box)


def synthesize(dest: np.ndarray, src: np.ndarray, settings: dict[str, Any],
               rng: np.random.Generator, dest_object: np.ndarray | None = None,
               src_object: np.ndarray | None = None) -> Example:
    """Make one NSA example by blending patches of ``src`` into ``dest``.

    Both images are (H, W, C) uint8 with C = 1 or 3. ``settings`` come from
    :func:`~nsa.generate.presets.resolve_settings`. Object masks ((H, W) uint8 0/1) are
    computed here when the settings ask for them and none are given. With ``same`` the
    source is ``dest`` itself and ``src`` is ignored.
    """
    p = parse_settings(settings)
    if p.same:
        src = dest
    check_image_pair(dest, src, settings)
    if p.uses_object_masks:
        if dest_object is None:
            dest_object = object_mask(dest, p.background)
        if src_object is None:
            src_object = object_mask(src, p.background)
    return _Synthesizer(dest, src, p, rng, dest_object, src_object).run()


@dataclass
class SourceSet:
    """Normal images of one category, validated once, with their object masks cached."""

    images: list[np.ndarray]
    background: tuple[float, float] | None = None
    object_masks: list[np.ndarray] | None = None
    integrals: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.images[0].shape

    def masks_for(self, background) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Object masks and their integral images for ``background`` (computed once)."""
        key = tuple(float(v) for v in background)
        if self.object_masks is None or self.background != key:
            self.object_masks = [object_mask(image, key) for image in self.images]
            self.integrals = [_integral(m) for m in self.object_masks]
            self.background = key
        return self.object_masks, self.integrals


def prepare_sources(images: Sequence[np.ndarray], settings: dict[str, Any]) -> SourceSet:
    """Validate ``images`` (equal-shaped (H, W, C) uint8, C in {1, 3}) for ``settings``
    and compute their object masks once."""
    images = list(images)
    if not images:
        raise ImageError("no source images given")
    p = parse_settings(settings)
    if len(images) < 2 and not p.same:
        raise ImageError("need at least 2 source images (a destination and a different "
                         "source), or the setting same=true")
    first = images[0]
    for i, image in enumerate(images):
        try:
            check_image_pair(image, first, settings)
        except ImageError as exc:
            raise ImageError(f"source image {i}: {exc}") from None
    sources = SourceSet(images=images)
    if p.uses_object_masks:
        sources.masks_for(p.background)
    return sources


def make_example(sources: SourceSet, settings: dict[str, Any], seed: int, index: int,
                 image_out: np.ndarray | None = None) -> Example:
    """Example ``index`` of a run seeded with ``seed``: a pure function of its inputs.

    Draws the destination and a different source (the same with ``same``) from the
    example's own stream (``pairing = "previous"``: :func:`previous_pair`), then calls
    the synthesis with cached object masks. ``image_out``: an (H, W, C) uint8 array of
    the sources' shape (a row of a shard's ``images``) that becomes the example's image,
    overwritten; by default a new array.
    """
    rng = example_rng(seed, index)
    p = parse_settings(settings)
    n = len(sources)
    if p.pairing == "previous":
        dest_index, source_index = previous_pair(seed, index, n)
        if p.same:
            source_index = dest_index
    else:
        dest_index = int(rng.integers(n))
        if p.same or n < 2:
            source_index = dest_index
        else:
            source_index = int(rng.integers(n - 1))
            source_index += source_index >= dest_index
    dest, src = sources.images[dest_index], sources.images[source_index]
    check_image_size(dest.shape[0], dest.shape[1], settings)
    if p.uses_object_masks:
        masks, integrals = sources.masks_for(p.background)
        example = _Synthesizer(dest, src, p, rng, masks[dest_index], masks[source_index],
                               integrals[source_index], image_out=image_out).run()
    else:
        example = _Synthesizer(dest, src, p, rng, None, None, image_out=image_out).run()
    example.dest_index, example.source_index = dest_index, source_index
    return example


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The (n,) int64 order in which pass ``epoch`` over ``n`` images visits them."""
    return epoch_rng(seed, epoch).permutation(n)


def previous_pair(seed: int, index: int, n: int) -> tuple[int, int]:
    """(destination, source) of example ``index`` with ``pairing = "previous"``.

    As the authors' data loader: examples are passes over the ``n`` images, each pass in
    its own shuffled order (:func:`epoch_order`); example ``i`` is position ``i % n`` of
    pass ``i // n``, and its source is the image visited just before it (the last image
    of the previous pass at a pass's start; before the first pass, an image drawn from
    pass 0's stream after its order). The source may equal the destination.
    """
    epoch, position = divmod(index, n)
    order = epoch_order(seed, epoch, n)
    if position > 0:
        source = order[position - 1]
    elif epoch > 0:
        source = epoch_order(seed, epoch - 1, n)[-1]
    else:
        rng = epoch_rng(seed, 0)
        rng.permutation(n)  # pass 0's order, then the image before it
        source = rng.integers(n)
    return int(order[position]), int(source)
