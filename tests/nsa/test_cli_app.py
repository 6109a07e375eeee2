"""Usage errors of every CLI are one ``error:`` line naming the option, exit 2."""

from __future__ import annotations

import pytest
from nsa.evaluate.cli import app as eval_app
from nsa.generate.cli import app as gen_app
from nsa.pipelines.cli import app as pipeline_app
from nsa.train.cli import app as train_app

from nsa.cli_app import App

APPS = {"nsa-gen": gen_app, "nsa-train": train_app, "nsa-eval": eval_app,
        "nsa-pipeline": pipeline_app}


def _run(app: App, args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        app(args=args, prog_name="prog")
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("name", sorted(APPS))
def test_every_cli_is_the_project_app(name: str) -> None:
    assert isinstance(APPS[name], App)


@pytest.mark.parametrize(("name", "args", "option"), [
    ("nsa-gen", ["elpv", "--type", "mono", "--n", "x"], "'--n'"),
    ("nsa-gen", ["elpv", "--type", "mono", "--n", "4", "--bogus"], "--bogus"),
    ("nsa-train", ["--shards", "s.zarr", "--steps", "two"], "'--steps'"),
    ("nsa-eval", ["elpv", "--type", "mono"], "'--model'"),
    ("nsa-pipeline", ["run", "--nope"], "--nope"),
])
def test_usage_error_is_one_error_line(name: str, args: list[str], option: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(APPS[name], args, capsys)
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and option in lines[0]
    assert lines[0].endswith("--help')")


def test_help_and_version_still_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(gen_app, ["elpv", "--help"], capsys)
    assert code == 0 and "--type" in out
    code, out, _ = _run(train_app, ["--version"], capsys)
    assert code == 0 and out.strip()


def test_no_arguments_print_help_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(gen_app, [], capsys)
    assert code == 2 and "Usage" in out + err and "error:" not in err


def test_a_commands_own_error_keeps_its_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(gen_app, ["elpv", "--type", "mono", "--n", "4", "--chunk-size", "0"],
                        capsys)
    assert code == 2
    assert err.strip() == "error: --chunk-size must be at least 1, not 0"
