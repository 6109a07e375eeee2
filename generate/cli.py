"""``nsa-gen``: generate NSA shard stores, preview a preset, inspect and verify stores.

Thin wiring: each command builds a :class:`~nsa.generate.sources.Source` and calls
:func:`~nsa.generate.generation.generate_store`, :func:`~nsa.generate.preview.write_preview`
or the store functions of :mod:`nsa.generate.shards`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from nsa.generate import shards
from nsa.generate.generation import generate_store, source_settings
from nsa.generate.images import load_images
from nsa.generate.sources import (
    Source,
    chestxray_source,
    elpv_source,
    folder_source,
    mvtec_source,
)

from nsa.errors import UserError, cli_errors
from nsa.version_option import show_version

app = typer.Typer(
    help="Generate NSA synthetic-anomaly examples into a Zarr shard store (Ray-parallel).",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
preview_app = typer.Typer(
    help="Write a PNG grid (destination | result | label map) of a few examples.",
    no_args_is_help=True,
)
app.add_typer(preview_app, name="preview")

Root = Annotated[Path, typer.Option("--root", help="Dataset root directory.")]
Category = Annotated[str, typer.Option("--category", help="MVTec AD category, e.g. zipper.")]
ListFile = Annotated[Path, typer.Option("--list", help="File naming one image per line.")]
CellType = Annotated[str, typer.Option("--type", help="ELPV cell type: mono or poly.")]
N = Annotated[int, typer.Option("--n", help="Number of examples to generate.")]
Out = Annotated[str, typer.Option(
    "--out", help="Store to write: a .zarr folder, or s3://BUCKET/KEY.zarr.")]
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
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
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


def _generate(source: Source, n: int, out: str, preset: str | None, seed: int,
              workers: int | None, address: str | None, resume: bool, overwrite: bool,
              size: int | None, chunk_size: int, settings: list[str] | None,
              quiet: bool) -> None:
    path = generate_store(
        source, out, n=n, preset=preset, overrides=parse_overrides(settings), seed=seed,
        workers=workers, address=address, resume=resume, overwrite=overwrite, size=size,
        chunk_size=chunk_size, progress=not quiet,
    )
    print(shards.format_summary(shards.open_store(path).summary()))


@app.command()
def mvtec(root: Root, category: Category, n: N, out: Out, preset: Preset = None,
          seed: Seed = 0, workers: Workers = None, address: Address = None,
          resume: Resume = False, overwrite: Overwrite = False, size: Size = None,
          chunk_size: ChunkSize = shards.DEFAULT_CHUNK_SIZE, settings: Set = None,
          quiet: Quiet = False) -> None:
    """MVTec AD: training images root/CATEGORY/train/good/ (any image format, any case)."""
    with cli_errors():
        _generate(mvtec_source(root, category), n, out, preset, seed, workers, address,
                  resume, overwrite, size, chunk_size, settings, quiet)


@app.command()
def chestxray(root: Root, list_file: ListFile, n: N, out: Out, preset: Preset = None,
              seed: Seed = 0, workers: Workers = None, address: Address = None,
              resume: Resume = False, overwrite: Overwrite = False, size: Size = None,
              chunk_size: ChunkSize = shards.DEFAULT_CHUNK_SIZE, settings: Set = None,
              quiet: Quiet = False) -> None:
    """NIH ChestX-ray14: the images under ROOT named one per line in --list."""
    with cli_errors():
        _generate(chestxray_source(root, list_file), n, out, preset, seed, workers, address,
                  resume, overwrite, size, chunk_size, settings, quiet)


@app.command()
def folder(root: Root, n: N, out: Out, preset: Preset = None, seed: Seed = 0,
           workers: Workers = None, address: Address = None, resume: Resume = False,
           overwrite: Overwrite = False, size: Size = None,
           chunk_size: ChunkSize = shards.DEFAULT_CHUNK_SIZE, settings: Set = None,
           quiet: Quiet = False) -> None:
    """Any folder of normal images (every format OpenCV decodes; recursive); needs --preset."""
    with cli_errors():
        _generate(folder_source(root), n, out, preset, seed, workers, address, resume,
                  overwrite, size, chunk_size, settings, quiet)


@app.command()
def elpv(cell_type: CellType, n: N, out: Out, preset: Preset = None, seed: Seed = 0,
         workers: Workers = None, address: Address = None, resume: Resume = False,
         overwrite: Overwrite = False, size: Size = None,
         chunk_size: ChunkSize = shards.DEFAULT_CHUNK_SIZE, settings: Set = None,
         quiet: Quiet = False) -> None:
    """ELPV solar cells (elpv-dataset package): the training split of one cell type."""
    with cli_errors():
        _generate(elpv_source(cell_type), n, out, preset, seed, workers, address, resume,
                  overwrite, size, chunk_size, settings, quiet)


def _preview(source: Source, n: int, out: Path, preset: str | None, seed: int,
             size: int | None, settings: list[str] | None) -> None:
    from nsa.generate.preview import write_preview
    from nsa.generate.synthesis import prepare_sources

    resolved = source_settings(source, preset, parse_overrides(settings), size)
    images = load_images(source.files, resolved["size"])
    path = write_preview(prepare_sources(images, resolved), resolved, seed, n, out)
    print(f"wrote {path} ({n} examples, preset {resolved['preset']}, seed {seed})")


@preview_app.command("mvtec")
def preview_mvtec(root: Root, category: Category, out: PreviewOut, n: PreviewN = 8,
                  preset: Preset = None, seed: Seed = 0, size: Size = None,
                  settings: Set = None) -> None:
    """Preview examples of an MVTec AD category."""
    with cli_errors():
        _preview(mvtec_source(root, category), n, out, preset, seed, size, settings)


@preview_app.command("chestxray")
def preview_chestxray(root: Root, list_file: ListFile, out: PreviewOut, n: PreviewN = 8,
                      preset: Preset = None, seed: Seed = 0, size: Size = None,
                      settings: Set = None) -> None:
    """Preview examples of ChestX-ray14 images named in --list."""
    with cli_errors():
        _preview(chestxray_source(root, list_file), n, out, preset, seed, size, settings)


@preview_app.command("folder")
def preview_folder(root: Root, out: PreviewOut, n: PreviewN = 8, preset: Preset = None,
                   seed: Seed = 0, size: Size = None, settings: Set = None) -> None:
    """Preview examples of a folder of images (needs --preset)."""
    with cli_errors():
        _preview(folder_source(root), n, out, preset, seed, size, settings)


@preview_app.command("elpv")
def preview_elpv(cell_type: CellType, out: PreviewOut, n: PreviewN = 8,
                 preset: Preset = None, seed: Seed = 0, size: Size = None,
                 settings: Set = None) -> None:
    """Preview examples of ELPV solar cells of one type."""
    with cli_errors():
        _preview(elpv_source(cell_type), n, out, preset, seed, size, settings)


@app.command()
def info(store: Annotated[str, typer.Argument(
        help="Store to describe (folder or s3:// URL).")]) -> None:
    """Print a store's summary: size, preset, seed, source, progress, label counts."""
    with cli_errors():
        opened = shards.open_store(store, allow_incomplete=True)
        print(shards.format_summary(opened.summary()))


@app.command()
def verify(store: Annotated[str, typer.Argument(help="Store to check (folder or s3:// URL).")],
           quiet: Quiet = False) -> None:
    """Re-check every chunk against its stored checksum; exit 1 naming bad chunks."""
    with cli_errors():
        checked = shards.verify_store(store, progress=not quiet)
        print(f"{store}: all {checked} chunks match their checksums")
