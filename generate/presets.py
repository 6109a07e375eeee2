"""Named synthesis settings: the one table of the method's per-category figures.

A preset is data, not a code path. :func:`resolve_settings` turns a preset name plus
overrides into a plain, JSON-serialisable dict that holds *every* synthesis setting (so a
store records exactly what made it) and what the trainer needs to prepare images
(``size``, ``augment``, ``epochs``). Setting names are the same everywhere: here, in the
``nsa-gen`` options, in the stored attributes and in the docs.

Figures come from ``docs/method.md`` §Presets (the paper's) and, for ``elpv``, from the issue
that fixed them. ``epochs`` for ``elpv`` (not a paper dataset) is 320, the paper's default.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from nsa.errors import UserError


class SettingsError(UserError):
    """An unknown preset, an unknown setting name, or a setting with an invalid value."""


MODES = ("normal", "mixed", "mix", "swap", "uniform")
LABEL_MODES = ("binary", "continuous", "intensity", "logistic-intensity")
KINDS = ("object", "texture", "xray", "elpv")
MAX_PATCHES = 4  # the shard format stores at most this many boxes per example

#: Every synthesis setting with its method default (docs/method.md §Synthesis).
SYNTHESIS_DEFAULTS: dict[str, Any] = {
    "mode": "normal",                  # Poisson guidance, or a baseline blend (docs/method.md)
    "label_mode": "logistic-intensity",
    "num_patches": 3,                  # first always attempted, each further one p = 1/2
    "width_bounds": [[0.03, 0.4], [0.03, 0.4]],  # half-width fractions ((h), (w))
    "gamma_params": [2.0, 0.05, 0.03],  # (shape, scale, offset) or None for uniform widths
    "num_ellipses": None,              # union of that many ellipses instead of a rectangle
    "background": None,                # (brightness b, threshold t) for object masks
    "min_object_pct": 0.7,
    "min_overlap_pct": 0.25,
    "resize": True,
    "resize_bounds": [0.7, 1.3],
    "shift": True,
    "same": False,                     # source = destination (CutPaste baseline)
    "cutpaste": False,                 # CutPaste patch sampling (supplement)
    "tol": 1.0,                        # grey levels of mean change that count as changed
    "logistic_params": [1 / 3, 7.0],   # (k, x0) of the logistic-intensity label
}

_OBJECT_AUGMENT = {"rotate": 0, "center_crop": 230, "crop": 224, "vflip": False, "hflip": False}
_TEXTURE_AUGMENT = {"rotate": 0, "center_crop": None, "crop": 256, "vflip": True, "hflip": False}


def _object(widths, patches, logistic, background, min_object, min_overlap, epochs,
            unaligned=False) -> dict[str, Any]:
    augment = dict(_OBJECT_AUGMENT, rotate=5 if unaligned else 0)
    return {
        "kind": "object", "size": 256, "unaligned": unaligned, "augment": augment,
        "epochs": epochs, "mode": "normal", "width_bounds": widths, "num_patches": patches,
        "logistic_params": logistic, "background": background,
        "min_object_pct": min_object, "min_overlap_pct": min_overlap,
        "resize_bounds": [0.7, 1.3],
    }


def _texture(patches, logistic, epochs=320) -> dict[str, Any]:
    return {
        "kind": "texture", "size": 264, "unaligned": False, "augment": dict(_TEXTURE_AUGMENT),
        "epochs": epochs, "mode": "mixed", "width_bounds": [[0.03, 0.4], [0.03, 0.4]],
        "num_patches": patches, "logistic_params": logistic, "background": None,
        "resize_bounds": [0.5, 2.0],
    }


_W40 = [[0.03, 0.4], [0.03, 0.4]]

#: name -> the settings that differ from :data:`SYNTHESIS_DEFAULTS`, plus image preparation.
PRESETS: dict[str, dict[str, Any]] = {
    "bottle": _object(_W40, 3, [1 / 12, 24], [200, 60], 0.7, 0.25, 320, unaligned=True),
    "cable": _object([[0.05, 0.4], [0.05, 0.4]], 3, [1 / 12, 24], None, 0.7, 0.25, 320),
    "capsule": _object([[0.03, 0.15], [0.03, 0.4]], 3, [1 / 2, 4], [200, 60], 0.7, 0.25, 320),
    "hazelnut": _object([[0.03, 0.35], [0.03, 0.35]], 3, [1 / 12, 24], [20, 20], 0.7, 0.25,
                        560, unaligned=True),
    "metal_nut": _object(_W40, 3, [1 / 3, 7], [20, 20], 0.5, 0.25, 560, unaligned=True),
    "pill": _object([[0.03, 0.2], [0.03, 0.4]], 3, [1 / 3, 7], [20, 20], 0.7, 0.25, 320),
    "screw": _object([[0.03, 0.12], [0.03, 0.12]], 4, [1, 3], [200, 60], 0.5, 0.25, 560,
                     unaligned=True),
    "toothbrush": _object([[0.03, 0.4], [0.03, 0.2]], 3, [1 / 6, 15], [20, 20], 0.25, 0.25,
                          320),
    "transistor": _object(_W40, 3, [1 / 6, 15], None, 0.7, 0.25, 320),
    "zipper": _object([[0.03, 0.4], [0.03, 0.2]], 4, [1 / 6, 15], [200, 60], 0.7, 0.25, 320),
    "carpet": _texture(4, [1 / 3, 7]),
    "grid": _texture(4, [1 / 3, 7]),
    "leather": _texture(4, [1 / 3, 7]),
    "tile": _texture(4, [1 / 3, 7]),
    "wood": _texture(4, [1 / 6, 15]),
    "chestxray": {
        "kind": "xray", "size": 256, "unaligned": False,
        "augment": {"rotate": 3, "center_crop": 230, "crop": 224, "vflip": False,
                    "hflip": False},
        "epochs": 240, "mode": "normal", "width_bounds": _W40, "num_patches": 3,
        "gamma_params": [2.0, 0.03, 0.05], "logistic_params": [1 / 2, 4],
        "background": [0, 20], "min_object_pct": 0.7, "min_overlap_pct": 0.7,
        "resize_bounds": [0.7, 1.3],
    },
    "elpv": {
        "kind": "elpv", "size": 256, "unaligned": False,
        "augment": {"rotate": 0, "center_crop": None, "crop": None, "vflip": True,
                    "hflip": True},
        "epochs": 320, "mode": "mixed", "width_bounds": _W40, "num_patches": 3,
        "gamma_params": [2.0, 0.05, 0.03], "logistic_params": [1 / 3, 7],
        "background": None, "resize_bounds": [0.7, 1.3],
    },
}

_PREPARATION_KEYS = ("kind", "size", "unaligned", "augment", "epochs")
SETTING_NAMES = (*SYNTHESIS_DEFAULTS, *_PREPARATION_KEYS)
_AUGMENT_KEYS = ("rotate", "center_crop", "crop", "vflip", "hflip")


def preset_names() -> list[str]:
    """All preset names, in table order (MVTec objects, textures, chestxray, elpv)."""
    return list(PRESETS)


def resolve_settings(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the full, validated settings of preset ``name`` with ``overrides`` applied.

    The result is a fresh plain dict (lists, not tuples) with every synthesis setting,
    ``preset``, ``size``, ``kind``, ``unaligned``, ``augment`` and ``epochs``. An
    ``augment`` override may give only some of its keys. Raises :class:`SettingsError`
    naming an unknown preset, unknown setting names, or the first invalid value.
    """
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise SettingsError(f"overrides must be a mapping of setting names to values, not "
                            f"{type(overrides).__name__}")
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise SettingsError(
            f"unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"valid names: {', '.join(SETTING_NAMES)}"
        )
    settings: dict[str, Any] = {"preset": name, **copy.deepcopy(SYNTHESIS_DEFAULTS)}
    settings.update(copy.deepcopy(PRESETS[name]))
    for key, value in overrides.items():
        if key == "augment" and isinstance(value, dict):
            unknown_aug = sorted(set(value) - set(_AUGMENT_KEYS))
            if unknown_aug:
                raise SettingsError(
                    f"unknown augment key(s) {', '.join(map(repr, unknown_aug))}; "
                    f"valid: {', '.join(_AUGMENT_KEYS)}"
                )
            settings["augment"] = {**settings["augment"], **copy.deepcopy(value)}
        else:
            settings[key] = copy.deepcopy(value)
    augment_given = set(overrides.get("augment") or {}) if isinstance(
        overrides.get("augment"), dict) else set()
    if "size" in overrides and overrides["size"] != PRESETS[name]["size"]:
        settings["augment"] = _scaled_crops(
            settings["augment"], PRESETS[name]["size"], overrides["size"], augment_given)
    return validate_settings(settings)


#: Crops are multiples of the NSA model's total stride (32), so that its map comes back at
#: exactly the crop's resolution.
CROP_MULTIPLE = 32


def _scaled_crops(augment: dict[str, Any], preset_size: int, size: Any,
                  given: set[str]) -> dict[str, Any]:
    """Scale the preset's crops with an overridden ``size`` (e.g. 224 of 256 at 128 px).

    A crop becomes the largest multiple of :data:`CROP_MULTIPLE` within the scaled crop
    (at least one multiple, at most ``size``); the centre crop scales and never falls
    below the crop. Crops the user gave explicitly are left alone; a size that is no
    integer is left for validation to reject.
    """
    if not isinstance(size, int) or size < CROP_MULTIPLE or not isinstance(augment, dict):
        return augment
    scaled = dict(augment)
    if "crop" not in given and _positive_int(augment.get("crop")):
        crop = augment["crop"] * size / preset_size
        scaled["crop"] = min(size, max(CROP_MULTIPLE, int(crop) // CROP_MULTIPLE * CROP_MULTIPLE))
    if "center_crop" not in given and _positive_int(augment.get("center_crop")):
        center = round(augment["center_crop"] * size / preset_size)
        crop = scaled.get("crop") if _positive_int(scaled.get("crop")) else 0
        scaled["center_crop"] = min(size, max(center, crop))
    return scaled


def _positive_int(value: Any) -> bool:
    """True for an int > 0 (not a bool): a crop that can be scaled; others are left for
    :func:`validate_settings` to name."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _fail(key: str, value: Any, want: str) -> SettingsError:
    return SettingsError(f"setting {key!r} = {value!r} is invalid: {want}")


def _number(settings: dict, key: str, lo: float = -math.inf, hi: float = math.inf,
            integer: bool = False, lo_open: bool = False) -> None:
    value = settings[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = math.isfinite(value) and (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        kind = "an integer" if integer else "a number"
        low = f"> {lo}" if lo_open else f">= {lo}"
        raise _fail(key, value, f"expected {kind} {low} and <= {hi}")
    settings[key] = int(value) if integer else float(value)


def _pair(settings: dict, key: str, lo: float, hi: float, ordered: bool = True) -> list:
    value = settings[key]
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) and lo <= v <= hi for v in value)
            and (not ordered or value[0] <= value[1])):
        order = " with first <= second" if ordered else ""
        raise _fail(key, value, f"expected two numbers in [{lo}, {hi}]{order}")
    return [float(v) for v in value]


def validate_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Check every setting's type and range in place; return the dict (normalised to lists).

    Called by :func:`resolve_settings`; also usable on settings read back from a store.
    """
    missing = [k for k in ("preset", *SETTING_NAMES) if k not in settings]
    if missing:
        raise SettingsError(f"settings lack {', '.join(missing)}; build them with "
                            "resolve_settings(preset, overrides)")
    for key, allowed in (("mode", MODES), ("label_mode", LABEL_MODES), ("kind", KINDS)):
        if settings[key] not in allowed:
            raise _fail(key, settings[key], f"choose one of {', '.join(allowed)}")
    _number(settings, "num_patches", 1, MAX_PATCHES, integer=True)
    widths = settings["width_bounds"]
    if not (isinstance(widths, (list, tuple)) and len(widths) == 2):
        raise _fail("width_bounds", widths, "expected ((min_h, max_h), (min_w, max_w))")
    settings["width_bounds"] = [
        _pair({"width_bounds": w}, "width_bounds", 0.0, 0.5) for w in widths
    ]
    if any(w[0] <= 0 for w in settings["width_bounds"]):
        raise _fail("width_bounds", widths, "half-width fractions must be > 0")
    if settings["gamma_params"] is not None:
        gp = settings["gamma_params"]
        if not (isinstance(gp, (list, tuple)) and len(gp) == 3
                and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) for v in gp)
                and gp[0] > 0 and gp[1] > 0 and gp[2] >= 0):
            raise _fail("gamma_params", gp, "expected (shape > 0, scale > 0, offset >= 0) "
                        "or null for uniform half-widths")
        settings["gamma_params"] = [float(v) for v in gp]
    if settings["num_ellipses"] is not None:
        _number(settings, "num_ellipses", 1, 100, integer=True)
    if settings["background"] is not None:
        settings["background"] = _pair(settings, "background", 0, 255, ordered=False)
    _number(settings, "min_object_pct", 0, 1)
    _number(settings, "min_overlap_pct", 0, 1)
    settings["resize_bounds"] = _pair(settings, "resize_bounds", 0.01, 100)
    _number(settings, "tol", 0, 255)
    lp = settings["logistic_params"]
    if not (isinstance(lp, (list, tuple)) and len(lp) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                    and math.isfinite(v) for v in lp) and lp[0] > 0):
        raise _fail("logistic_params", lp, "expected (k > 0, x0)")
    settings["logistic_params"] = [float(v) for v in lp]
    for key in ("resize", "shift", "same", "cutpaste", "unaligned"):
        if not isinstance(settings[key], bool):
            raise _fail(key, settings[key], "expected true or false")
    _number(settings, "size", 16, 8192, integer=True)
    _number(settings, "epochs", 1, 100000, integer=True)
    settings["augment"] = _validate_augment(settings["augment"])
    return settings


def _validate_augment(augment: Any) -> dict[str, Any]:
    if not isinstance(augment, dict) or sorted(augment) != sorted(_AUGMENT_KEYS):
        raise _fail("augment", augment, f"expected a dict with keys {', '.join(_AUGMENT_KEYS)}")
    aug = dict(augment)
    _number(aug, "rotate", 0, 180)
    for key in ("center_crop", "crop"):
        if aug[key] is not None:
            _number(aug, key, 1, 8192, integer=True)
    for key in ("vflip", "hflip"):
        if not isinstance(aug[key], bool):
            raise _fail(f"augment.{key}", aug[key], "expected true or false")
    return aug


def check_recorded_settings(settings: Any) -> None:
    """Check settings read back from a store; raise :class:`SettingsError` naming the fault.

    A full record (every setting name present, as ``nsa-gen`` writes) must pass
    :func:`validate_settings`; a partial one (written by other tools) must be a mapping
    whose ``augment``, when present, is valid, since training reads it. Nothing is changed.
    """
    if not isinstance(settings, dict):
        raise SettingsError(f"settings are {type(settings).__name__}, not a mapping")
    if all(key in settings for key in ("preset", *SETTING_NAMES)):
        validate_settings(copy.deepcopy(settings))
    elif "augment" in settings:
        _validate_augment(copy.deepcopy(settings["augment"]))
