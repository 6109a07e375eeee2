"""Synthesis settings: one typed model, and the named presets of the method's figures.

:class:`SynthesisSettings` is the one definition of every setting: its name, type, range
and method default. It validates on construction, and its errors name the setting
(``setting 'num_patches' = 9 is invalid: ...``). A preset is a row of keyword arguments,
not a code path. :func:`resolve_settings` turns a preset name plus overrides into the
model's plain, JSON-serialisable record (``SynthesisSettings.record()``), which holds
*every* setting (those of :data:`IMPLIED_SETTINGS` only when they differ from the value
their absence means), so a store records exactly what made it. The names are the same
everywhere: here, in ``nsa-gen --set``, in a pipeline config's ``[generate] set``, in the
stored attributes and in the docs.

``paper_epochs`` is the number of epochs the paper trained a category for; a store of the
paper's budget holds training images x ``paper_epochs`` examples (:func:`paper_budget`),
which the trainer then reads in one pass (its ``--epochs`` counts passes over stores).
Records before settings version 2 called it ``epochs``; :func:`parse_settings` and
:func:`check_recorded_settings` read them as version 2.

Figures come from ``docs/method.md`` (the paper's sections 3 and 4) and, for ``elpv``,
from the issue that fixed them; ``paper_epochs`` of ``elpv`` (not a paper dataset) is 320,
the paper's default.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError
from pydantic import field_validator as _field_validator

from nsa.errors import UserError


class SettingsError(UserError):
    """An unknown preset, an unknown setting name, or a setting with an invalid value."""


MODES = ("normal", "mixed", "mix", "swap", "uniform")
LABEL_MODES = ("binary", "continuous", "intensity", "logistic-intensity")
KINDS = ("object", "texture", "xray", "elpv")
#: Where the project's synthesis differs from the authors' release, each choice is a
#: setting (docs/method.md §Deviations); the second value of each is the release's.
LABEL_REGIONS = ("union", "overwrite")
PATCH_PLACEMENTS = ("box", "seamless-clone")
ROUNDINGS = ("nearest", "truncate")
PAIRINGS = ("random", "previous")
#: The value every store made before these settings existed was made with. A record
#: leaves such a setting out when it has this value, so those stores (and the pipeline
#: hashes of their settings) keep their identity; a record without one means this value
#: whatever the model's default is.
IMPLIED_SETTINGS = {"label_region": "union", "patch_placement": "box",
                    "rounding": "nearest", "pairing": "random"}
#: Kinds whose test images are seen through the centre crop their training crops came from.
CENTRE_CROP_KINDS = ("object", "xray")
#: The most patches one example can have; the shard format stores this many boxes.
MAX_PATCHES = 4
#: The NSA model's total stride: the sides it takes are multiples of this, and crops are
#: made multiples of it so that its map comes back at exactly the crop's resolution.
MODEL_STRIDE = 32
#: The version of the stored settings record: 2 renamed ``epochs`` to ``paper_epochs``
#: and records this number (version 1 records have no ``settings_version``).
SETTINGS_VERSION = 2


def _real(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return float(value)


def _integer(value: Any) -> int:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not float(value).is_integer()):
        raise ValueError("expected an integer")
    return int(value)


Real = Annotated[float, BeforeValidator(_real)]
Integer = Annotated[int, BeforeValidator(_integer)]
Fraction = Annotated[Real, Field(ge=0, le=1)]
Pair = Annotated[list[Real], Field(min_length=2, max_length=2)]
Side = Annotated[Integer, Field(ge=1, le=8192)]


def _ordered(pair: list[float]) -> list[float]:
    if pair[0] > pair[1]:
        raise ValueError("expected two numbers with first <= second")
    return pair


def _within(pair: list[float], lo: float, hi: float) -> list[float]:
    if not all(lo <= v <= hi for v in pair):
        raise ValueError(f"expected two numbers in [{lo}, {hi}]")
    return pair


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Augment(_Model):
    """Training augmentation (method sections 3 and 4); a missing key means "off"."""

    rotate: Annotated[Real, Field(ge=0, le=180)] = 0.0  # degrees, uniform in +-rotate
    center_crop: Side | None = None  # pixels; the window random crops move in
    crop: Side | None = None  # pixels; the random crop the model sees
    vflip: StrictBool = False
    hflip: StrictBool = False


class SynthesisSettings(_Model):
    """Every setting of a store: synthesis (method section 1) and image preparation.

    Field order is the order of the stored record. Construct with
    :func:`parse_settings` (errors become :class:`SettingsError` naming the setting).
    """

    preset: str
    mode: Literal[MODES] = "normal"  # Poisson guidance, or a baseline blend (section 2)
    label_mode: Literal[LABEL_MODES] = "logistic-intensity"
    #: patches attempted: the first always, each further one with p = 1/2
    num_patches: Annotated[Integer, Field(ge=1, le=MAX_PATCHES)] = 3
    #: half-width fractions of the image side ((min_h, max_h), (min_w, max_w))
    width_bounds: Annotated[list[Pair], Field(min_length=2, max_length=2)] = [
        [0.03, 0.4], [0.03, 0.4]]
    #: (shape, scale, offset) of the half-width distribution, or None for uniform widths
    gamma_params: Annotated[list[Real], Field(min_length=3, max_length=3)] | None = [
        2.0, 0.05, 0.03]
    num_ellipses: Annotated[Integer, Field(ge=1, le=100)] | None = None  # else a rectangle
    background: Pair | None = None  # (brightness b, threshold t): object masks
    min_object_pct: Fraction = 0.7
    min_overlap_pct: Fraction = 0.25
    resize: StrictBool = True
    resize_bounds: Pair = [0.7, 1.3]
    shift: StrictBool = True
    same: StrictBool = False  # source = destination (CutPaste baseline)
    cutpaste: StrictBool = False  # CutPaste patch sampling (supplement)
    tol: Annotated[Real, Field(ge=0, le=255)] = 1.0  # grey levels of change that count
    logistic_params: Pair = [1 / 3, 7.0]  # (k, x0) of the logistic-intensity label
    #: union of all patch regions, or a later patch's box overwrites an earlier region
    label_region: Literal[LABEL_REGIONS] = "union"
    #: Poisson blend written into the sampled box, or placed by its centre as
    #: cv2.seamlessClone does (the label stays on the box)
    patch_placement: Literal[PATCH_PLACEMENTS] = "box"
    rounding: Literal[ROUNDINGS] = "nearest"  # Poisson solution to grey levels
    #: source drawn at random, or the previous image of a shuffled pass over the images
    pairing: Literal[PAIRINGS] = "random"
    kind: Literal[KINDS]
    size: Annotated[Integer, Field(ge=16, le=8192)]  # image side in pixels
    unaligned: StrictBool
    augment: Augment
    paper_epochs: Annotated[Integer, Field(ge=1, le=100000)]
    settings_version: Literal[2] = SETTINGS_VERSION
    #: the value images wider than 8 bits were scaled by (absent for 8-bit images)
    white_level: Annotated[Integer, Field(ge=1)] | None = None

    @_field_validator("width_bounds")
    @classmethod
    def _widths(cls, widths: list[list[float]]) -> list[list[float]]:
        for pair in widths:
            _ordered(_within(pair, 0.0, 0.5))
            if pair[0] <= 0:
                raise ValueError("half-width fractions must be > 0")
        return widths

    @_field_validator("gamma_params")
    @classmethod
    def _gamma(cls, gp: list[float] | None) -> list[float] | None:
        if gp is not None and not (gp[0] > 0 and gp[1] > 0 and gp[2] >= 0):
            raise ValueError("expected (shape > 0, scale > 0, offset >= 0) or null for "
                             "uniform half-widths")
        return gp

    @_field_validator("background")
    @classmethod
    def _background(cls, pair: list[float] | None) -> list[float] | None:
        return None if pair is None else _within(pair, 0, 255)

    @_field_validator("resize_bounds")
    @classmethod
    def _resize_bounds(cls, pair: list[float]) -> list[float]:
        return _ordered(_within(pair, 0.01, 100))

    @_field_validator("logistic_params")
    @classmethod
    def _logistic(cls, pair: list[float]) -> list[float]:
        if pair[0] <= 0:
            raise ValueError("expected (k > 0, x0)")
        return pair

    @property
    def uses_object_masks(self) -> bool:
        """Whether patches must lie on the object (``background`` set); never for the
        CutPaste baselines (``same`` or ``cutpaste``), as in the authors' release."""
        return self.background is not None and not self.same and not self.cutpaste

    def record(self) -> dict[str, Any]:
        """The plain JSON-serialisable dict a store records (no ``white_level`` for 8-bit
        images, and none of :data:`IMPLIED_SETTINGS` at its implied value, so such
        records are what they always were)."""
        record = self.model_dump()
        if record["white_level"] is None:
            del record["white_level"]
        for name, value in IMPLIED_SETTINGS.items():
            if record[name] == value:
                del record[name]
        return record


#: Names ``--set`` may override: every setting but the record's bookkeeping.
SETTING_NAMES = tuple(name for name in SynthesisSettings.model_fields
                      if name not in ("preset", "settings_version", "white_level"))
_REQUIRED = tuple(name for name, f in SynthesisSettings.model_fields.items() if f.is_required())


def evaluation_view(kind: str | None, size: int, augment: Augment) -> tuple[int, int | None]:
    """How test images are presented: resized to ``side`` squared and seen through the
    centre ``crop`` (objects and X-rays, whose training crops were taken around it; the
    map is zero outside) or whole (``crop`` None; textures and ELPV cells at their
    training crop's side)."""
    if kind in CENTRE_CROP_KINDS:
        crop = augment.crop
        return int(size), (int(crop) if crop and crop < size else None)
    return int(augment.crop or size), None


def _error(exc: ValidationError, data: Mapping[str, Any],
           within: tuple[str, ...] = ()) -> SettingsError:
    """The first validation error as one line naming the setting and its value; ``within``
    is where the validated data lies in a record (``("augment",)``)."""
    error = exc.errors()[0]
    loc = (*within, *error["loc"])
    name, value = str(loc[0]) if loc else "settings", data.get(loc[0]) if loc else data
    if name == "augment" and len(loc) > 1 and isinstance(loc[1], str):
        name, value = f"augment.{loc[1]}", error.get("input")
    if error["type"] == "missing":
        return SettingsError(f"settings lack {name!r}; build them with "
                             "resolve_settings(preset, overrides)")
    if error["type"] == "extra_forbidden":
        return SettingsError(f"unknown setting {name!r}; valid names: "
                             f"{', '.join(Augment.model_fields if '.' in name else SETTING_NAMES)}")
    message = error["msg"].removeprefix("Value error, ")
    return SettingsError(f"setting {name!r} = {value!r} is invalid: "
                         f"{message[:1].lower()}{message[1:]}")


def upgrade_settings(record: Any) -> Any:
    """A version 1 record (``epochs``, no ``settings_version``) as version 2 would record
    it; anything else unchanged. Not validated: :func:`parse_settings` does that."""
    if (not isinstance(record, Mapping) or "settings_version" in record
            or "epochs" not in record or "paper_epochs" in record):
        return record
    renamed = {("paper_epochs" if key == "epochs" else key): value
               for key, value in record.items()}
    return {**renamed, "settings_version": SETTINGS_VERSION}


def parse_settings(data: Mapping[str, Any] | SynthesisSettings) -> SynthesisSettings:
    """The typed settings of a full record (as :func:`resolve_settings` returns or a store
    holds, version 1 or 2). Raises :class:`SettingsError` naming the first bad setting."""
    if isinstance(data, SynthesisSettings):
        return data
    if not isinstance(data, Mapping):
        raise SettingsError(f"settings are {type(data).__name__}, not a mapping")
    data = {**IMPLIED_SETTINGS, **upgrade_settings(data)}
    try:
        return SynthesisSettings.model_validate(data)
    except ValidationError as exc:
        raise _error(exc, data) from None


def parse_augment(augment: Any) -> Augment:
    """The typed ``augment`` of a (possibly partial) record; SettingsError when invalid."""
    try:
        return Augment.model_validate(augment if augment is not None else {})
    except ValidationError as exc:
        raise _error(exc, {"augment": augment}, within=("augment",)) from None


# -- the presets ----------------------------------------------------------------------

_W40 = [[0.03, 0.4], [0.03, 0.4]]


def _object(*, width_bounds: list, num_patches: int, logistic_params: list,
            background: list | None, min_object_pct: float, paper_epochs: int,
            unaligned: bool = False, min_overlap_pct: float = 0.25) -> dict[str, Any]:
    """An MVTec AD object: 256 px, normal Poisson, centre crop 230 and random crop 224,
    rotated up to 5 degrees when its photos are ``unaligned``."""
    return {
        "kind": "object", "size": 256, "unaligned": unaligned,
        "augment": {"rotate": 5 if unaligned else 0, "center_crop": 230, "crop": 224,
                    "vflip": False, "hflip": False},
        "paper_epochs": paper_epochs, "mode": "normal", "width_bounds": width_bounds,
        "num_patches": num_patches, "logistic_params": logistic_params,
        "background": background, "min_object_pct": min_object_pct,
        "min_overlap_pct": min_overlap_pct, "resize_bounds": [0.7, 1.3],
    }


def _texture(*, num_patches: int, logistic_params: list,
             paper_epochs: int = 320) -> dict[str, Any]:
    """An MVTec AD texture: 264 px, mixed Poisson, random crop 256, vertical flips."""
    return {
        "kind": "texture", "size": 264, "unaligned": False,
        "augment": {"rotate": 0, "center_crop": None, "crop": 256, "vflip": True,
                    "hflip": False},
        "paper_epochs": paper_epochs, "mode": "mixed", "width_bounds": _W40,
        "num_patches": num_patches, "logistic_params": logistic_params, "background": None,
        "resize_bounds": [0.5, 2.0],
    }


#: name -> the settings that differ from the model's defaults, plus image preparation.
PRESETS: dict[str, dict[str, Any]] = {
    "bottle": _object(width_bounds=_W40, num_patches=3, logistic_params=[1 / 12, 24],
                      background=[200, 60], min_object_pct=0.7, paper_epochs=320,
                      unaligned=True),
    "cable": _object(width_bounds=[[0.05, 0.4], [0.05, 0.4]], num_patches=3,
                     logistic_params=[1 / 12, 24], background=None, min_object_pct=0.7,
                     paper_epochs=320),
    "capsule": _object(width_bounds=[[0.03, 0.15], [0.03, 0.4]], num_patches=3,
                       logistic_params=[1 / 2, 4], background=[200, 60], min_object_pct=0.7,
                       paper_epochs=320),
    "hazelnut": _object(width_bounds=[[0.03, 0.35], [0.03, 0.35]], num_patches=3,
                        logistic_params=[1 / 12, 24], background=[20, 20],
                        min_object_pct=0.7, paper_epochs=560, unaligned=True),
    "metal_nut": _object(width_bounds=_W40, num_patches=3, logistic_params=[1 / 3, 7],
                         background=[20, 20], min_object_pct=0.5, paper_epochs=560,
                         unaligned=True),
    "pill": _object(width_bounds=[[0.03, 0.2], [0.03, 0.4]], num_patches=3,
                    logistic_params=[1 / 3, 7], background=[20, 20], min_object_pct=0.7,
                    paper_epochs=320),
    "screw": _object(width_bounds=[[0.03, 0.12], [0.03, 0.12]], num_patches=4,
                     logistic_params=[1, 3], background=[200, 60], min_object_pct=0.5,
                     paper_epochs=560, unaligned=True),
    "toothbrush": _object(width_bounds=[[0.03, 0.4], [0.03, 0.2]], num_patches=3,
                          logistic_params=[1 / 6, 15], background=[20, 20],
                          min_object_pct=0.25, paper_epochs=320),
    "transistor": _object(width_bounds=_W40, num_patches=3, logistic_params=[1 / 6, 15],
                          background=None, min_object_pct=0.7, paper_epochs=320),
    "zipper": _object(width_bounds=[[0.03, 0.4], [0.03, 0.2]], num_patches=4,
                      logistic_params=[1 / 6, 15], background=[200, 60], min_object_pct=0.7,
                      paper_epochs=320),
    "carpet": _texture(num_patches=4, logistic_params=[1 / 3, 7]),
    "grid": _texture(num_patches=4, logistic_params=[1 / 3, 7]),
    "leather": _texture(num_patches=4, logistic_params=[1 / 3, 7]),
    "tile": _texture(num_patches=4, logistic_params=[1 / 3, 7]),
    "wood": _texture(num_patches=4, logistic_params=[1 / 6, 15]),
    "chestxray": {
        "kind": "xray", "size": 256, "unaligned": False,
        "augment": {"rotate": 3, "center_crop": 230, "crop": 224, "vflip": False,
                    "hflip": False},
        "paper_epochs": 240, "mode": "normal", "width_bounds": _W40, "num_patches": 3,
        "gamma_params": [2.0, 0.03, 0.05], "logistic_params": [1 / 2, 4],
        "background": [0, 20], "min_object_pct": 0.7, "min_overlap_pct": 0.7,
        "resize_bounds": [0.7, 1.3],
    },
    "elpv": {
        "kind": "elpv", "size": 256, "unaligned": False,
        "augment": {"rotate": 0, "center_crop": None, "crop": None, "vflip": True,
                    "hflip": True},
        "paper_epochs": 320, "mode": "mixed", "width_bounds": _W40, "num_patches": 3,
        "gamma_params": [2.0, 0.05, 0.03], "logistic_params": [1 / 3, 7],
        "background": None, "resize_bounds": [0.7, 1.3],
    },
}


def preset_names() -> list[str]:
    """All preset names, in table order (MVTec objects, textures, chestxray, elpv)."""
    return list(PRESETS)


def paper_budget(preset: str, images: int) -> int:
    """The paper's sample budget of ``preset`` for ``images`` training images: images x
    its ``paper_epochs`` (every epoch synthesised one example per training image)."""
    if preset not in PRESETS:
        raise SettingsError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    return images * PRESETS[preset]["paper_epochs"]


def resolve_settings(name: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return the full, validated settings record of preset ``name`` with ``overrides``.

    The result is a fresh plain dict (lists, not tuples; the fields of
    :class:`SynthesisSettings` in order). An ``augment`` override may give only some of
    its keys; an overridden ``size`` scales the preset's crops (:func:`_scaled_crops`).
    Raises :class:`SettingsError` naming an unknown preset, unknown setting names, or the
    first invalid value.
    """
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    if overrides is not None and not isinstance(overrides, dict):
        raise SettingsError(f"overrides must be a mapping of setting names to values, not "
                            f"{type(overrides).__name__}")
    overrides = copy.deepcopy(dict(overrides or {}))
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        renamed = " ('epochs' is now 'paper_epochs')" if "epochs" in unknown else ""
        raise SettingsError(
            f"unknown setting(s) {', '.join(map(repr, unknown))}{renamed}; "
            f"valid names: {', '.join(SETTING_NAMES)}"
        )
    defaults = {key: SynthesisSettings.model_fields[key].default for key in IMPLIED_SETTINGS}
    settings: dict[str, Any] = {"preset": name, **defaults, **copy.deepcopy(PRESETS[name])}
    augment_given: set[str] = set()
    if "augment" in overrides:
        augment = overrides.pop("augment")
        if isinstance(augment, dict):
            unknown_aug = sorted(set(augment) - set(Augment.model_fields))
            if unknown_aug:
                raise SettingsError(
                    f"unknown augment key(s) {', '.join(map(repr, unknown_aug))}; "
                    f"valid: {', '.join(Augment.model_fields)}"
                )
            augment, augment_given = {**settings["augment"], **augment}, set(augment)
        settings["augment"] = augment
    settings.update(overrides)
    if "size" in overrides and overrides["size"] != PRESETS[name]["size"]:
        settings["augment"] = _scaled_crops(
            settings["augment"], PRESETS[name]["size"], overrides["size"], augment_given)
    return parse_settings(settings).record()


def _scaled_crops(augment: dict[str, Any], preset_size: int, size: Any,
                  given: set[str]) -> dict[str, Any]:
    """Scale the preset's crops with an overridden ``size`` (e.g. 224 of 256 at 128 px).

    A crop becomes the largest multiple of :data:`MODEL_STRIDE` within the scaled crop
    (at least one multiple, at most ``size``); the centre crop scales and never falls
    below the crop. Crops the user gave explicitly are left alone; a size that is no
    integer is left for validation to reject.
    """
    if not isinstance(size, int) or size < MODEL_STRIDE or not isinstance(augment, dict):
        return augment
    scaled = dict(augment)
    if "crop" not in given and _positive_int(augment.get("crop")):
        crop = augment["crop"] * size / preset_size
        scaled["crop"] = min(size, max(MODEL_STRIDE, int(crop) // MODEL_STRIDE * MODEL_STRIDE))
    if "center_crop" not in given and _positive_int(augment.get("center_crop")):
        center = round(augment["center_crop"] * size / preset_size)
        crop = scaled.get("crop") if _positive_int(scaled.get("crop")) else 0
        scaled["center_crop"] = min(size, max(center, crop))
    return scaled


def _positive_int(value: Any) -> bool:
    """True for an int > 0 (not a bool): a crop that can be scaled; others are left for
    validation to name."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_recorded_settings(settings: Any) -> None:
    """Check settings read back from a store; raise :class:`SettingsError` naming the fault.

    A full record (every required setting present, as ``nsa-gen`` writes, version 1 or 2)
    must parse as :class:`SynthesisSettings`; a partial one (written by other tools) must
    be a mapping whose ``augment``, when present, is valid, since training reads it.
    Nothing is changed.
    """
    if not isinstance(settings, Mapping):
        raise SettingsError(f"settings are {type(settings).__name__}, not a mapping")
    if all(key in upgrade_settings(settings) for key in _REQUIRED):
        parse_settings(settings)
    elif "augment" in settings:
        parse_augment(settings["augment"])
