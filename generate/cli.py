"""``nsa-gen``: generate NSA shard stores, preview a preset, inspect and verify stores.

Thin wiring: one subcommand (and one ``preview`` subcommand) per dataset of the registry
(:data:`nsa.datasets.DATASETS`), each with the dataset's own options and the shared ones
defined here; it builds the dataset's :class:`~nsa.generate.sources.Source` and calls
:func:`~nsa.generate.generation.generate_store` or
:func:`~nsa.generate.preview.write_preview`. ``info`` and ``verify`` call
:mod:`nsa.generate.shards`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from nsa.datasets import DATASETS, Dataset
from nsa.generate import shards
from nsa.generate.generation import generate_store, source_settings
from nsa.generate.images import load_images
from nsa.generate.sources import Source

from nsa.cli_app import App
from nsa.errors import UserError, cli_errors
from nsa.version_option import show_version

app = App(
    help="Generate NSA synthetic-anomaly examples into a Zarr shard store (Ray-parallel).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
preview_app = typer.Typer(
    help="Write a PNG grid (destination | result | label map) of a few examples.",
    no_args_is_help=True,
)
app.add_typer(preview_app, name="preview")

N = Annotated[int, typer.Option("--n", help="Number of examples to generate.")]
Out = Annotated[str | None, typer.Option(
    "--out", help="Store to write: a .zarr folder, or s3://BUCKET/KEY.zarr. Default: "
    "shards/NAME-nN-sSEED.zarr in the working directory (NAME: the category, cell type or "
    "folder), printed at the start.")]
Preset = Annotated[str | None, typer.Option(
    "--preset", help="Synthesis preset (default: the source's own; required for folder).")]
Seed = Annotated[int, typer.Option("--seed", help="Seed; same seed, same bytes.")]
Workers = Annotated[int | None, typer.Option(
    "--workers", help="Concurrent Ray tasks (default: every CPU).")]
Address = Annotated[str | None, typer.Option(
    "--address", help="Join the Ray cluster at host:port instead of starting one.")]
Resume = Annotated[bool, typer.Option("--resume", help="Finish an interrupted store.")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing store.")]
Size = Annotated[int | None, typer.Option(
    "--size", help="Image side in pixels (default: the preset's).")]
ChunkSize = Annotated[int, typer.Option(
    "--chunk-size", help="Examples per chunk (the unit of a checksum and a read; a task "
    "writes a shard of up to 16 chunks).")]
Set = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a setting, KEY=VALUE with VALUE in JSON (repeatable).")]
Progress = Annotated[bool, typer.Option("--progress/--no-progress",
                                        help="Show progress bars.")]
Quiet = Annotated[bool, typer.Option("--quiet", hidden=True,
                                     help="The old name of --no-progress.")]
PreviewN = Annotated[int, typer.Option("--n", help="Number of example rows.")]
PreviewOut = Annotated[Path, typer.Option("--out", help="PNG file to write.")]


@app.callback()
def main(
    version: Annotated[bool, typer.Option(
        "--version", callback=show_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Generate NSA synthetic-anomaly examples into a Zarr shard store (Ray-parallel)."""


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["mode=\\"swap\\"", "num_patches=2"]`` -> settings overrides (bare words are strings)."""
    overrides: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key.strip()] = text
    return overrides


def _generate(source: Source, n: int, out: Path | str, *, preset: str | None, seed: int,
              workers: int | None, address: str | None, resume: bool, overwrite: bool,
              size: int | None, chunk_size: int, settings: list[str] | None,
              progress: bool, quiet: bool) -> None:
    path = generate_store(
        source, out, n=n, preset=preset, overrides=parse_overrides(settings), seed=seed,
        workers=workers, address=address, resume=resume, overwrite=overwrite, size=size,
        chunk_size=chunk_size, progress=progress and not quiet,
    )
    print(shards.format_summary(shards.open_store(path).summary()))


def default_out(dataset: Dataset, own: dict[str, Any], n: int, seed: int) -> Path:
    """``shards/<name>-n<n>-s<seed>.zarr`` under the working directory, ``<name>`` from the
    dataset's own options (the category, the cell type, the folder's name)."""
    return Path("shards") / f"{dataset.out_name(**own)}-n{n}-s{seed}.zarr"


def _generate_dataset(dataset: Dataset, own: dict[str, Any], n: int, out: str | None,
                      **options: Any) -> None:
    source = dataset.source(**own)
    if out is None:
        path = default_out(dataset, own, n, options["seed"])
        print(f"writing {path} (--out not given)", flush=True)
        _generate(source, n, path, **options)
    else:
        _generate(source, n, out, **options)


def _preview(source: Source, *, n: int, out: Path, preset: str | None, seed: int,
             size: int | None, settings: list[str] | None) -> None:
    from nsa.generate.preview import write_preview
    from nsa.generate.synthesis import prepare_sources

    resolved = source_settings(source, preset, parse_overrides(settings), size)
    images = load_images(source.files, resolved["size"])
    path = write_preview(prepare_sources(images, resolved), resolved, seed, n, out)
    print(f"wrote {path} ({n} examples, preset {resolved['preset']}, seed {seed})")


def _preview_dataset(dataset: Dataset, own: dict[str, Any], **options: Any) -> None:
    _preview(dataset.source(**own), **options)


def _command(dataset: Dataset, shared: list[inspect.Parameter],
             body: Callable[..., None]) -> Callable[..., None]:
    """A typer command: ``dataset``'s own options, then ``shared``; calls
    ``body(dataset, own_values, **shared_values)`` inside :func:`cli_errors`."""
    own_names = [p.name for p in dataset.gen_options]

    def command(**values: Any) -> None:
        with cli_errors():
            own = {name: values.pop(name) for name in own_names}
            body(dataset, own, **values)

    parameters = [*dataset.gen_options, *shared]
    command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in parameters}
    command.__doc__ = dataset.summary
    return command


def _shared(**options: tuple[Any, Any]) -> list[inspect.Parameter]:
    return [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                              default=default)
            for name, (annotation, default) in options.items()]


_REQUIRED = inspect.Parameter.empty
#: The options every dataset subcommand of nsa-gen shares, after the dataset's own.
GENERATE_OPTIONS = _shared(
    n=(N, _REQUIRED), out=(Out, None), preset=(Preset, None), seed=(Seed, 0),
    workers=(Workers, None), address=(Address, None), resume=(Resume, False),
    overwrite=(Overwrite, False), size=(Size, None),
    chunk_size=(ChunkSize, shards.DEFAULT_CHUNK_SIZE), settings=(Set, None),
    progress=(Progress, True), quiet=(Quiet, False),
)
#: The same for ``nsa-gen preview``.
PREVIEW_OPTIONS = _shared(
    out=(PreviewOut, _REQUIRED), n=(PreviewN, 8), preset=(Preset, None), seed=(Seed, 0),
    size=(Size, None), settings=(Set, None),
)

for _dataset in DATASETS.values():
    app.command(_dataset.name)(_command(_dataset, GENERATE_OPTIONS, _generate_dataset))
    preview_app.command(_dataset.name, help=f"Preview examples of {_dataset.title} images.")(
        _command(_dataset, PREVIEW_OPTIONS, _preview_dataset))


@app.command()
def info(store: Annotated[str, typer.Argument(
        help="Store to describe (folder or s3:// URL).")]) -> None:
    """Print a store's summary: size, preset, seed, source, progress, label counts."""
    with cli_errors():
        opened = shards.open_store(store, allow_incomplete=True)
        print(shards.format_summary(opened.summary()))


@app.command()
def verify(store: Annotated[str, typer.Argument(help="Store to check (folder or s3:// URL).")],
           progress: Progress = True, quiet: Quiet = False) -> None:
    """Re-check every chunk against its stored checksum; exit 1 naming bad chunks."""
    with cli_errors():
        checked = shards.verify_store(store, progress=progress and not quiet)
        print(f"{store}: the chunk matches its checksum" if checked == 1
              else f"{store}: all {checked} chunks match their checksums")
