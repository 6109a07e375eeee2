"""``nsa-pipeline``: chain nsa-gen, nsa-train and nsa-eval for many categories and seeds."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import typer
from nsa.pipelines.config import load_config
from nsa.pipelines.demo import demo_table, run_demo
from nsa.pipelines.remote_out import send_files
from nsa.pipelines.runner import run_pipeline
from nsa.pipelines.summary import summarise, write_summary

from nsa.cli_app import App
from nsa.errors import cli_errors
from nsa.version_option import show_version

app = App(
    help="Run NSA end to end (generate -> train -> evaluate) for many categories and seeds.",
    no_args_is_help=True,
    add_completion=False,
)



@app.callback()
def main(
    version: bool = typer.Option(False, "--version", callback=show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Pipelines over the three stages; see `nsa-pipeline COMMAND --help`."""


@app.command()
def run(
    config: Path = typer.Argument(..., help="Pipeline config (TOML), e.g. "
                                  "pipelines/configs/mvtec-paper.toml."),
    out: str = typer.Option(None, help="Output root, a folder or an s3://BUCKET/PREFIX URL "
                            "(default: the config's `out`)."),
    address: str = typer.Option(None, help="Join this Ray cluster (host:port or auto): "
                                "generation spreads over its CPUs, training takes a GPU."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """Run every (category, seed) job of CONFIG, skipping stages already done.

    The whole config is checked before the first job; a problem is one error line, exit 2.
    """
    with cli_errors():
        parsed = load_config(config, out)
        try:
            outcomes = run_pipeline(parsed, address=address, progress=progress)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM, `ray job stop`: say how to go on
            print("note: the stages finished so far are kept; the same command again does "
                  "only what is missing", file=sys.stderr)
            raise
        rows = summarise(outcomes)
        md, csv_path = write_summary(rows, parsed.out)
        print(md.read_text())
        tables = [str(md), str(csv_path)]
        if parsed.out_url is not None:
            tables = send_files(parsed.out_url, parsed.out, [md.name, csv_path.name])
            shutil.rmtree(parsed.out, ignore_errors=True)  # the staging folder
        for outcome in outcomes:
            print(outcome.line())
        print(f"tables: {' and '.join(tables)}")
        if any(outcome.error for outcome in outcomes):
            raise typer.Exit(1)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/elpv-demo"), help="Output root of the demo."),
    progress: bool = typer.Option(True, help="Show progress bars."),
) -> None:
    """The ELPV demo: mono solar cells, CPU only, 5.5 to 13 minutes on 2 cores."""
    with cli_errors():
        result = run_demo(out, progress=progress)
        print(demo_table(result))
        if result.outcome.error:
            print(f"demo failed: {result.outcome.error}")
            raise typer.Exit(1)
        job = result.config.jobs()[0].directory
        print(f"\nwall time: {result.seconds / 60:.1f} min")
        print(f"anomaly maps: {job / 'eval' / 'maps'}   curves: {job / 'eval' / 'curves.png'}")
        print(f"synthetic anomalies: {result.preview}   training: {job / 'run'}")
        print(f"tables: {job / 'eval' / 'metrics.md'}")
