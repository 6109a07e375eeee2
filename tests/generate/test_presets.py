"""Presets: the method's figures by name, overridable, validated, JSON-serialisable."""

import json
import re
from pathlib import Path

import pytest
from nsa.generate.presets import (
    PRESETS,
    SettingsError,
    check_recorded_settings,
    parse_settings,
    preset_names,
    resolve_settings,
    upgrade_settings,
)

from nsa.errors import UserError

MVTEC = ("bottle", "cable", "capsule", "hazelnut", "metal_nut", "pill", "screw",
         "toothbrush", "transistor", "zipper", "carpet", "grid", "leather", "tile", "wood")


def test_preset_names_are_the_15_mvtec_categories_chestxray_and_elpv():
    assert sorted(preset_names()) == sorted([*MVTEC, "chestxray", "elpv"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_resolves_to_plain_json_with_every_setting(name):
    settings = resolve_settings(name)
    assert json.loads(json.dumps(settings)) == settings
    for key in ("preset", "size", "kind", "unaligned", "augment", "paper_epochs", "mode",
                "label_mode", "num_patches", "width_bounds", "gamma_params", "background",
                "min_object_pct", "min_overlap_pct", "resize", "resize_bounds", "shift",
                "same", "cutpaste", "tol", "logistic_params", "num_ellipses"):
        assert key in settings
    assert settings["preset"] == name


def test_elpv_preset_has_the_figures_of_the_issue():
    s = resolve_settings("elpv")
    assert s["kind"] == "elpv" and s["size"] == 256 and s["background"] is None
    assert s["width_bounds"] == [[0.03, 0.4], [0.03, 0.4]]
    assert s["gamma_params"] == [2.0, 0.05, 0.03]
    assert s["num_patches"] == 3 and s["mode"] == "mixed"
    assert s["label_mode"] == "logistic-intensity"
    assert s["logistic_params"] == pytest.approx([1 / 3, 7])
    assert s["resize_bounds"] == [0.7, 1.3] and s["resize"] and s["shift"]
    assert s["augment"] == {"rotate": 0, "center_crop": None, "crop": None, "vflip": True,
                            "hflip": True}


def test_bottle_is_an_unaligned_object_with_normal_poisson_and_object_masks():
    s = resolve_settings("bottle")
    assert (s["kind"], s["size"], s["mode"], s["unaligned"]) == ("object", 256, "normal", True)
    assert s["background"] == [200, 60] and s["min_object_pct"] == 0.7
    assert s["logistic_params"] == pytest.approx([1 / 12, 24])
    assert s["augment"] == {"rotate": 5, "center_crop": 230, "crop": 224, "vflip": False,
                            "hflip": False}
    assert s["paper_epochs"] == 320


def test_aligned_objects_are_not_rotated():
    assert resolve_settings("capsule")["augment"]["rotate"] == 0
    assert resolve_settings("capsule")["width_bounds"] == [[0.03, 0.15], [0.03, 0.4]]


def test_screw_has_four_patches_and_560_epochs():
    s = resolve_settings("screw")
    assert (s["num_patches"], s["paper_epochs"], s["min_object_pct"]) == (4, 560, 0.5)


def test_textures_use_mixed_poisson_264_pixels_and_wider_rescaling():
    for name in ("carpet", "grid", "leather", "tile", "wood"):
        s = resolve_settings(name)
        assert (s["kind"], s["size"], s["mode"]) == ("texture", 264, "mixed")
        assert s["resize_bounds"] == [0.5, 2.0] and s["background"] is None
        assert s["augment"] == {"rotate": 0, "center_crop": None, "crop": 256,
                                "vflip": True, "hflip": False}
    assert resolve_settings("wood")["logistic_params"] == pytest.approx([1 / 6, 15])


def test_chestxray_has_its_own_gamma_and_overlap():
    s = resolve_settings("chestxray")
    assert s["gamma_params"] == [2.0, 0.03, 0.05]
    assert (s["min_object_pct"], s["min_overlap_pct"], s["paper_epochs"]) == (0.7, 0.7, 240)
    assert s["background"] == [0, 20] and s["augment"]["rotate"] == 3


def test_any_field_can_be_overridden():
    s = resolve_settings("elpv", {"mode": "normal", "num_patches": 1, "size": 128,
                                  "gamma_params": None, "augment": {"hflip": False}})
    assert (s["mode"], s["num_patches"], s["size"], s["gamma_params"]) == (
        "normal", 1, 128, None)
    assert s["augment"]["hflip"] is False and s["augment"]["vflip"] is True


def test_resolved_settings_are_a_fresh_copy():
    resolve_settings("elpv")["width_bounds"][0][0] = 0.3
    assert resolve_settings("elpv")["width_bounds"][0][0] == 0.03


def test_unknown_preset_is_a_user_error_naming_it():
    with pytest.raises(UserError, match="unknown preset 'bottel'"):
        resolve_settings("bottel")


def test_unknown_settings_are_named():
    with pytest.raises(SettingsError, match=r"'colour'.*'modes'"):
        resolve_settings("elpv", {"modes": "mixed", "colour": 1})


def test_overrides_must_be_a_mapping():
    with pytest.raises(SettingsError, match="mapping"):
        resolve_settings("elpv", ["mode=mixed"])


@pytest.mark.parametrize("key,value", [
    ("mode", "poisson"), ("label_mode", "soft"), ("num_patches", 0), ("num_patches", 5),
    ("num_patches", 2.5), ("width_bounds", [[0.4, 0.03], [0.03, 0.4]]),
    ("width_bounds", [[0.0, 0.4], [0.03, 0.4]]), ("gamma_params", [2, -1, 0]),
    ("background", [300, 10]), ("resize_bounds", [2, 1]), ("shift", "yes"),
    ("tol", -1), ("logistic_params", [0, 7]), ("augment", {"spin": 3}), ("size", 4),
])
def test_invalid_values_are_settings_errors_naming_the_setting(key, value):
    with pytest.raises(SettingsError, match=key.split(".")[0]):
        resolve_settings("elpv", {key: value})


def test_overridden_size_scales_the_crops_to_multiples_of_32():
    augment = resolve_settings("bottle", {"size": 128})["augment"]
    assert augment["crop"] == 96 and augment["center_crop"] == 115
    assert resolve_settings("carpet", {"size": 128})["augment"]["crop"] == 96


def test_preset_size_keeps_the_papers_crops():
    assert resolve_settings("bottle", {"size": 256})["augment"]["crop"] == 224
    assert resolve_settings("carpet")["augment"]["crop"] == 256


def test_explicit_crops_survive_a_size_override():
    augment = resolve_settings("bottle", {"size": 64, "augment": {"crop": 64,
                                                                 "center_crop": 64}})["augment"]
    assert (augment["crop"], augment["center_crop"]) == (64, 64)


@pytest.mark.parametrize(("augment", "named"), [
    (5, "'augment' = 5"), (None, "'augment' = None"), ([1, 2], "'augment' = [1, 2]"),
    ({"crop": "x"}, "'augment.crop' = 'x'"),
    ({"center_crop": True}, "'augment.center_crop' = True"),
])
def test_a_malformed_augment_with_a_size_override_is_named(augment, named):
    with pytest.raises(SettingsError, match=re.escape(named)):
        resolve_settings("bottle", {"augment": augment, "size": 64})


#: Every preset's resolved settings as nsa-pipeline resolved them before the typed model
#: (settings version 1), and some at 128 px (``name@128``).
FROZEN = json.loads((Path(__file__).parent / "presets_v1.json").read_text())


@pytest.mark.parametrize("key", sorted(FROZEN))
def test_preset_rows_resolve_to_the_frozen_settings(key):
    name, _, size = key.partition("@")
    settings = resolve_settings(name, {"size": int(size)} if size else None)
    old = FROZEN[key]
    # version 2 renamed epochs to paper_epochs and records its version; nothing else moved
    assert json.dumps(settings) == json.dumps(upgrade_settings(old))
    assert parse_settings(old).record() == settings


def test_the_object_mask_condition_excludes_both_cutpaste_baselines():
    assert parse_settings(resolve_settings("bottle")).uses_object_masks
    for override in ({"same": True}, {"cutpaste": True}, {"background": None}):
        assert not parse_settings(resolve_settings("bottle", override)).uses_object_masks


def test_set_errors_are_one_line_naming_the_setting_exit_2(mvtec_root, tmp_path):
    from nsa.generate.cli import app
    from typer.testing import CliRunner

    base = ["mvtec", "--root", str(mvtec_root), "--category", "bottle", "--n", "4",
            "--out", str(tmp_path / "x.zarr"), "--no-progress", "--set"]
    for item, message in [
        ("num_patches=9", "error: setting 'num_patches' = 9 is invalid: input should be "
                          "less than or equal to 4"),
        ('num_patches="3"', "error: setting 'num_patches' = '3' is invalid: expected an "
                            "integer"),
        ("augment={\"crop\": true}", "error: setting 'augment.crop' = True is invalid: "
                                     "expected an integer"),
        ("colour=1", "error: unknown setting(s) 'colour'; valid names: mode,"),
    ]:
        result = CliRunner().invoke(app, [*base, item])
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), result.output
    assert not (tmp_path / "x.zarr").exists()


def test_a_version_1_store_is_read_and_resumed_as_the_same_settings():
    from nsa.generate.generation import _resume_mismatch

    old = FROZEN["bottle@128"]
    check_recorded_settings(old)
    wanted = {"preset": "bottle", "settings": resolve_settings("bottle", {"size": 128}),
              "seed": 0, "n": 8, "chunk_size": 4, "height": 128, "width": 128,
              "channels": 3, "source": {"kind": "mvtec", "files": []}}
    attrs = {**wanted, "settings": old}
    assert _resume_mismatch(attrs, wanted) is None
    changed = {**old, "num_patches": 2}
    assert _resume_mismatch({**attrs, "settings": changed}, wanted) == (
        "settings: num_patches (2 there, 3 now) (to finish it as it was made: "
        "--set num_patches=2)")
