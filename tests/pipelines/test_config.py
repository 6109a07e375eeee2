from pathlib import Path

import pytest
from nsa.pipelines.config import ConfigError, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_jobs_are_category_major_with_one_folder_each(tmp_path):
    config = load_config(write(tmp_path, """
out = "o"
seeds = [0, 1]
[source]
kind = "mvtec"
root = "r"
categories = ["bottle", "zipper"]
[generate]
n = 10
"""))
    assert [job.name for job in config.jobs()] == [
        "bottle/seed0", "bottle/seed1", "zipper/seed0", "zipper/seed1"]
    assert config.jobs()[1].directory == Path("o/bottle/seed1")


def test_n_by_category_overrides_n(tmp_path):
    config = load_config(write(tmp_path, """
out = "o"
[source]
kind = "mvtec"
root = "r"
categories = ["bottle", "zipper"]
[generate]
n = 10
n_by_category = { zipper = 76800 }
"""))
    assert (config.n_for("bottle"), config.n_for("zipper")) == (10, 76800)


def test_out_option_replaces_the_configs_out(tmp_path):
    path = write(tmp_path, 'out = "o"\n[source]\nkind = "elpv"\n[generate]\nn = 5\n')
    assert load_config(path, tmp_path / "x").out == tmp_path / "x"


@pytest.mark.parametrize(("text", "message"), [
    ('out = "o"\n[source]\nkind = "nope"\n', "kind must be one of"),
    ('out = "o"\n[source]\nkind = "elpv"\n[generate]\nn = 5\nepochs = 3\n',
     "unknown key(s) in [generate]: epochs"),
    ('out = "o"\n[source]\nkind = "elpv"\n', "gives no n"),
    ('[source]\nkind = "elpv"\n[generate]\nn = 5\n', "no output root"),
    ('out = "o"\nseeds = []\n[source]\nkind = "elpv"\n[generate]\nn=1\n', "seeds must be"),
    ('out = "o"\n[source]\nkind = "mvtec"\nroot = "r"\n[generate]\nn=1\n', "categories"),
    ('out = [', "not valid TOML"),
])
def test_bad_configs_are_refused_naming_the_problem(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert message in str(info.value)
    assert str(tmp_path / "c.toml") in str(info.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_packaged_configs_parse():
    root = Path(__file__).parents[2] / "pipelines" / "configs"
    paper = load_config(root / "mvtec-paper.toml")
    assert len(paper.categories) == 15 and paper.seeds == [0, 1, 2, 3, 4]
    assert paper.n_for("zipper") == 240 * 320
    chest = load_config(root / "chestxray-paper.toml")
    assert chest.categories == ["male", "female"] and chest.n_for("male") == 1973 * 240
    assert load_config(root / "elpv-demo.toml").categories == ["mono"]
