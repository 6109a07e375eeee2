"""Config validation: every problem is one line naming the file and the key, before any job."""

from pathlib import Path

import pytest
from nsa.generate.presets import paper_budget
from nsa.generate.sources import elpv_source, mvtec_source
from nsa.pipelines.cli import app
from nsa.pipelines.config import ConfigError, check_inputs, default_preset, load_config
from nsa.pipelines.runner import run_pipeline
from typer.testing import CliRunner

#: A valid two-category config; the cases below edit one line of it.
BASE = """out = "o"
seeds = [0, 1]

[source]
kind = "mvtec"
root = "r"
categories = ["bottle", "zipper"]

[generate]
n = 10

[train]
steps = 2

[evaluate]
protocol = "nsa"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def edit(old: str | tuple[str, ...], new: str | tuple[str, ...]) -> str:
    """BASE with ``old`` replaced by ``new`` (or each of several in turn)."""
    text = BASE
    pairs = zip(old, new, strict=True) if isinstance(old, tuple) else [(old, new)]
    for before, after in pairs:
        assert before in text
        text = text.replace(before, after)
    return text


def test_jobs_are_category_major_with_one_folder_each(tmp_path):
    config = load_config(write(tmp_path, BASE))
    assert [job.name for job in config.jobs()] == [
        "bottle/seed0", "bottle/seed1", "zipper/seed0", "zipper/seed1"]
    assert config.jobs()[1].directory == Path("o/bottle/seed1")


def test_n_by_category_overrides_n(tmp_path):
    text = edit("n = 10", "n = 10\nn_by_category = { zipper = 76800 }")
    config = load_config(write(tmp_path, text))
    assert (config.n_for("bottle"), config.n_for("zipper")) == (10, 76800)


def test_budgets_of_mvtec_categories_not_run_may_stay(tmp_path):
    text = edit("n = 10", "n = 10\nn_by_category = { zipper = 76800, screw = 70400 }")
    config = load_config(write(tmp_path, text))
    assert [job.category for job in config.jobs()] == ["bottle", "bottle", "zipper", "zipper"]


def test_out_option_replaces_the_configs_out(tmp_path):
    path = write(tmp_path, edit('out = "o"\n', ""))
    assert load_config(path, tmp_path / "x").out == tmp_path / "x"


def test_settings_are_resolved_as_generation_resolves_them(tmp_path):
    config = load_config(write(tmp_path, edit("n = 10", "n = 10\nsize = 64")))
    assert config.settings["bottle"]["preset"] == "bottle"
    assert config.settings["zipper"]["preset"] == "zipper"
    assert config.settings["bottle"]["size"] == 64


@pytest.mark.parametrize(("old", "new", "message"), [
    # types: a string is not split into letters, a number is not a table
    ('["bottle", "zipper"]', '"catA"', '[source] categories: must be a list [...], not "catA"'),
    ("n = 10", 'n = "abc"', '[generate] n: must be a positive integer or "paper", not "abc"'),
    (('out = "o"', "[generate]\nn = 10\n"), ('out = "o"\ngenerate = 5', ""),
     "generate: must be a table, not 5"),
    ("seeds = [0, 1]", "seeds = [0, true]", "seeds[1]: must be an integer, not true"),
    ("steps = 2", "steps = 2.5", "[train] steps: must be an integer, not 2.5"),
    # unknown keys in every table, with the closest known name
    ('root = "r"', 'root = "r"\ncategoriez = ["x"]',
     "[source] categoriez: unknown key (did you mean 'categories'?)"),
    ("steps = 2", "steps = 2\nstepz = 3", "[train] stepz: unknown key (did you mean 'steps'?)"),
    ("n = 10", "n = 10\nepochs = 3", "[generate] epochs: unknown key"),
    ('out = "o"', 'out = "o"\nseed = 1', "seed: unknown key (did you mean 'seeds'?)"),
    ('protocol = "nsa"', 'protocol = "nsa"\nmax_picture = 3',
     "[evaluate] max_picture: unknown key (did you mean 'max_pictures'?)"),
    # values
    ("steps = 2", "steps = 0", "[train] steps: must be at least 1, not 0"),
    ('protocol = "nsa"', 'protocol = "nsx"',
     '[evaluate] protocol: must be "nsa" or "mvtec", not "nsx"'),
    ("n = 10", "n = 0", '[generate] n: must be a positive integer or "paper", not 0'),
    ("n = 10", "n = 10\nworkers = 0", "[generate] workers: must be at least 1, not 0"),
    ("n = 10", "n = 10\nchunk_size = 0", "[generate] chunk_size: must be at least 1"),
    ("seeds = [0, 1]", "seeds = [-1]", "seeds[0]: must be at least 0, not -1"),
    ("seeds = [0, 1]", "seeds = [0, 0]", "seeds: 0 is given twice"),
    ("seeds = [0, 1]", "seeds = []", "seeds: must not be empty"),
    ("steps = 2", "steps = 2\nbatch_size = 0", "[train] batch_size: must be at least 1"),
    ("steps = 2", 'steps = 2\ndevice = "gpu"', "[train] device: must be"),
    ("steps = 2", 'steps = 2\nfinal_layer = "deconv"',
     '[train] final_layer: must be "resize-conv" or "transposed", not "deconv"'),
    ('kind = "mvtec"', 'kind = "nope"', "[source] kind: must be one of mvtec, chestxray"),
    ('"zipper"]', '"zippr"]', "[source] categories: 'zippr' is not an MVTec AD category "
     "(did you mean 'zipper'?)"),
    ('"zipper"]', '"bottle"]', "[source] categories: 'bottle' is given twice"),
    ("n = 10", "n_by_category = { bottle = 5 }", "[generate] n: missing"),
    ("n = 10", "n = 10\nn_by_category = { zipperr = 5 }",
     "[generate] n_by_category.zipperr: not a category of [source] (did you mean 'zipper'?)"),
    ('out = "o"\n', "", "out: missing"),
    ('out = "o"', 'out = [', "not valid TOML"),
    # each stage's own checks, run at load
    ("steps = 2", "steps = 2\nepochs = 1", "[train] give exactly one of epochs or steps"),
    ("steps = 2", "steps = 2\nbatch_size = 9\nworkers = 2",
     "[train] batch_size 9 must be divisible by workers 2"),
    ("steps = 2", "steps = 2\nlr = 0.001\nmin_lr = 0.01", "[train] min_lr must lie between"),
    ("n = 10", "n = 10\nsize = 8", "setting 'size' = 8 is invalid"),
    ("n = 10", 'n = 10\npreset = "nope"', "[generate] unknown preset 'nope'"),
    ("n = 10", 'n = 10\nset = { mode = "nope" }',
     "[generate] (category bottle) setting 'mode' = 'nope'"),
    ("n = 10", "n = 10\nset = { augmnt = 1 }",
     "[generate] (category bottle) unknown setting(s) 'augmnt'"),
])
def test_a_bad_config_is_one_line_naming_file_and_key(tmp_path, old, new, message):
    path = write(tmp_path, edit(old, new))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "message"), [
    ('out = "o"\n[source]\nkind = "elpv"\ntype = "mixed"\n[generate]\nn = 5\n'
     '[train]\nsteps = 1\n', '[source] type: must be "mono" or "poly", not "mixed"'),
    ('out = "o"\n[source]\nkind = "chestxray"\nroot = "r"\n[source.lists.male]\n'
     'train = "a"\n[generate]\nn = 5\n[train]\nsteps = 1\n',
     "[source] lists.male.normal_test: missing"),
    ('out = "o"\n[source]\nkind = "folder"\nroot = "r"\ntest_good = "g"\n'
     'test_defects = ["d"]\n[generate]\nn = 5\n[train]\nsteps = 1\n',
     "[generate] preset: missing"),
    ('out = "o"\n[source]\nkind = "folder"\nroot = "r"\ntest_good = "g"\n'
     'test_defects = "dents"\n[generate]\nn = 5\npreset = "elpv"\n[train]\nsteps = 1\n',
     '[source] test_defects: must be a list [...], not "dents"'),
])
def test_other_source_kinds_are_checked_too(tmp_path, text, message):
    with pytest.raises(ConfigError, match="^" + str(tmp_path)) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)


def test_missing_config_file_is_named_with_the_folder_a_relative_name_was_looked_for_in(
        tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"no such config file$"):
        load_config(tmp_path / "absent.toml")
    monkeypatch.chdir(tmp_path)  # a `ray job submit` entry point runs in the head's folder
    with pytest.raises(ConfigError) as info:
        load_config(Path("absent.toml"))
    assert str(info.value) == (f"absent.toml: no such config file (looked in {tmp_path}, "
                               "the working folder)")


def test_missing_folders_stop_the_pipeline_before_any_job(tmp_path, mvtec_root):
    out = tmp_path / "out"
    config = load_config(write(tmp_path, edit('"r"', f'"{tmp_path / "absent"}"')), out)
    with pytest.raises(ConfigError, match=r"\[source\] root: .*absent does not exist"):
        run_pipeline(config, progress=False)
    assert not out.exists()
    config = load_config(write(tmp_path, edit('"r"', f'"{mvtec_root}"')), out)
    with pytest.raises(ConfigError, match=r"\[source\] categories: no folder 'zipper' in .* "
                                          r"\(known: bottle\)"):
        check_inputs(config)


def test_default_presets_are_those_of_the_sources(tmp_path, mvtec_root):
    config = load_config(write(tmp_path, edit('"r"', f'"{mvtec_root}"')))
    assert default_preset(config.source, "bottle") == mvtec_source(mvtec_root,
                                                                   "bottle").default_preset
    elpv = load_config(write(tmp_path, 'out = "o"\n[source]\nkind = "elpv"\n[generate]\n'
                                       'n = 5\n[train]\nsteps = 1\n'))
    assert default_preset(elpv.source, "mono") == elpv_source("mono").default_preset


def test_packaged_configs_parse():
    root = Path(__file__).parents[2] / "pipelines" / "configs"
    paper = load_config(root / "mvtec-paper.toml")
    assert len(paper.categories) == 15 and paper.seeds == [0, 1, 2, 3, 4]
    assert paper.generate.n == "paper"
    chest = load_config(root / "chestxray-paper.toml")
    assert chest.categories == ["male", "female"] and chest.generate.n == "paper"
    assert load_config(root / "elpv-demo.toml").categories == ["mono"]


#: The budgets mvtec-paper.toml and chestxray-paper.toml wrote by hand before they were
#: derived: category -> (training images, n).
HAND_WRITTEN_BUDGETS = {
    "bottle": (209, 66880), "cable": (224, 71680), "capsule": (219, 70080),
    "hazelnut": (391, 218960), "metal_nut": (220, 123200), "pill": (267, 85440),
    "screw": (320, 179200), "toothbrush": (60, 19200), "transistor": (213, 68160),
    "zipper": (240, 76800), "carpet": (280, 89600), "grid": (264, 84480),
    "leather": (245, 78400), "tile": (230, 73600), "wood": (247, 79040),
    "chestxray": (1973, 473520),
}


def test_derived_paper_budgets_equal_the_hand_written_ones():
    for preset, (images, n) in HAND_WRITTEN_BUDGETS.items():
        assert paper_budget(preset, images) == n, preset
    assert paper_budget("chestxray", 1641) == 393840  # the female list


def test_n_paper_counts_the_categorys_training_images(tmp_path, mvtec_root):
    text = edit(('root = "r"', '["bottle", "zipper"]', "n = 10"),
                (f'root = "{mvtec_root}"', '["bottle"]', 'n = "paper"'))
    config = load_config(write(tmp_path, text))
    assert config.n_for("bottle") == 6 * 320  # 6 images in bottle/train/good


@pytest.mark.parametrize("key,line", [
    ("categories", 'categories = "bottle"'), ("seeds", "seeds = 0"),
])
def test_a_string_or_number_where_a_list_belongs_is_refused(tmp_path, key, line):
    text = edit('categories = ["bottle", "zipper"]', line) if key == "categories" else \
        edit("seeds = [0, 1]", line)
    with pytest.raises(ConfigError, match=f"{key}: must be a list"):
        load_config(write(tmp_path, text))


def test_renamed_keys_are_still_read(tmp_path):
    text = edit(("n = 10", "steps = 2"),
                ('n = 10\noverrides = { mode = "swap" }', "steps = 2\nnum_workers = 2"))
    config = load_config(write(tmp_path, text))
    assert config.generate.set == {"mode": "swap"} and config.train.workers == 2
    elpv = load_config(write(tmp_path, 'out = "o"\n[source]\nkind = "elpv"\n'
                             'cell_type = "poly"\n[generate]\nn = 5\n[train]\nsteps = 1\n'))
    assert elpv.categories == ["poly"]


def _cli_cases(tmp_path: Path) -> dict[str, Path]:
    cases = {
        "n_text": edit("n = 10", 'n = "abc"'),
        "generate_number": edit(('out = "o"', "[generate]\nn = 10\n"),
                                ('out = "o"\ngenerate = 5', "")),
        "categories_string": edit('["bottle", "zipper"]', '"catA"'),
        "steps_zero": edit("steps = 2", "steps = 0"),
        "protocol": edit('protocol = "nsa"', 'protocol = "nsx"'),
    }
    paths = {}
    for name, text in cases.items():
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(text)
    paths["not_utf8"] = tmp_path / "latin1.toml"
    paths["not_utf8"].write_bytes('out = "sortie-\u00e9t\u00e9"\n'.encode("latin-1"))
    paths["directory"] = tmp_path / "folder.toml"
    paths["directory"].mkdir()
    return paths


@pytest.mark.parametrize(("case", "message"), [
    ("n_text", '[generate] n: must be a positive integer or "paper", not "abc"'),
    ("generate_number", "generate: must be a table, not 5"),
    ("categories_string", '[source] categories: must be a list [...], not "catA"'),
    ("steps_zero", "[train] steps: must be at least 1, not 0"),
    ("protocol", '[evaluate] protocol: must be "nsa" or "mvtec", not "nsx"'),
    ("not_utf8", "not UTF-8 text (byte 14 is b'\\xe9')"),
    ("directory", "is a directory, not a config file"),
])
def test_nsa_pipeline_run_prints_one_error_line_and_exits_2(tmp_path, case, message):
    path = _cli_cases(tmp_path)[case]
    result = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / "out"),
                                      "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == f"error: {path}: {message}\n"
    assert not (tmp_path / "out").exists()


def test_an_output_root_that_cannot_be_made_is_one_error_line(tmp_path, mvtec_root):
    config = write(tmp_path, edit(('"r"', '["bottle", "zipper"]'),
                                  (f'"{mvtec_root}"', '["bottle"]')))
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out"
    result = CliRunner().invoke(app, ["run", str(config), "--out", str(out), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.stderr == f"error: {out}: not a directory\n"


@pytest.mark.parametrize(("where", "value", "message"), [
    ("--out", "s3:/nsa/x", "--out: s3:/nsa/x: a URL needs '://' after its scheme"),
    ("--out", "S3://nsa/x", "--out: S3://nsa/x: only local paths and s3:// URLs"),
    ("out", "s3:/nsa/x", "c.toml: out: s3:/nsa/x: a URL needs '://' after its scheme"),
    ("stores", "s3:/nsa/st", "c.toml: [generate] stores: s3:/nsa/st: a URL needs '://'"),
])
def test_a_mistyped_url_is_one_error_line_not_a_local_folder(tmp_path, monkeypatch, where,
                                                             value, message):
    monkeypatch.chdir(tmp_path)
    text = BASE.replace("[generate]\n", f'[generate]\nstores = "{value}"\n') \
        if where == "stores" else BASE.replace('out = "o"', f'out = "{value}"') \
        if where == "out" else BASE
    config = write(tmp_path, text)
    args = ["--out", value] if where == "--out" else []
    result = CliRunner().invoke(app, ["run", str(config), *args, "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # no s3: folder


def test_an_interrupted_pipeline_says_that_running_it_again_goes_on(tmp_path, monkeypatch):
    def interrupted(*_, **__):
        raise KeyboardInterrupt  # Ctrl-C (or SIGTERM, `ray job stop`) while jobs run

    monkeypatch.setattr("nsa.pipelines.cli.run_pipeline", interrupted)
    result = CliRunner().invoke(app, ["run", str(write(tmp_path, BASE)), "--no-progress"])
    assert result.exit_code == 130
    assert result.stderr == ("note: the stages finished so far are kept; the same command "
                             "again does only what is missing\ninterrupted\n")
