"""Pipeline configs: a TOML file naming the data, categories, seeds and per-stage options.

A config reads top to bottom like the job it describes::

    out = "runs/elpv-demo"          # output root, a folder or s3:// URL (``--out`` overrides)
    seeds = [0, 1]

    [source]                        # where the normal training images come from
    kind = "elpv"                   # a dataset of nsa.datasets: mvtec, visa, folder, ...
    type = "mono"                   # elpv: mono | poly

    [generate]                      # nsa-gen options, same names as the CLI
    n = 8000                        # or "paper", or n_by_category = { zipper = 76800, ... }
    size = 128
    set = { mode = "swap" }         # --set mode=swap
    stores = "s3://bucket/nsa"      # optional: stores go to STORES/<category>/seed<k>.zarr

    [train]                         # nsa-train options
    epochs = 1
    batch_size = 32

    [evaluate]                      # nsa-eval options
    protocol = "nsa"

Every option has the name it has on the stage's command line (with ``_`` for ``-``), so
a config is what a user would otherwise type three times per category. ``n = "paper"``
is the paper's budget: the category's training images x its preset's ``paper_epochs``.
Keys renamed since are still read: ``cell_type`` (now ``type``), ``overrides`` (now
``set``), ``num_workers`` (now ``workers``).

:func:`load_config` checks the whole file before any job starts: every table and key
(types are strict: a string where a list belongs is an error, not a list of letters;
unknown keys are refused with the closest known name), every value, and each stage's
options the way the stage itself will check them (generation's preset resolution, the
trainer's ``check_config``, evaluation's ``check_protocol``). :func:`check_inputs`
then checks that the folders and list files the config names exist. Either raises one
:class:`ConfigError` line ``<config>: [table] key: problem``.
"""

from __future__ import annotations

import json
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import tomllib
from nsa.datasets import DATASETS
from nsa.datasets.base import SourceTable, Table, hint
from nsa.evaluate.inference import check_protocol
from nsa.generate.generation import source_settings
from nsa.generate.presets import PRESETS, paper_budget
from nsa.generate.shards import DEFAULT_CHUNK_SIZE
from nsa.generate.sources import Source
from nsa.pipelines.remote_out import staging_root
from nsa.train.model import FinalLayer
from nsa.train.trainer import TrainConfig, check_config
from pydantic import AliasChoices, BaseModel, Field, PlainValidator, ValidationError

from nsa.errors import UserError, os_error
from nsa.locations import is_url, parse_location

SOURCE_KINDS = tuple(DATASETS)
DEVICES = ("auto", "cpu", "cuda")

PositiveInt = Annotated[int, Field(ge=1)]


def _budget(value: Any) -> int | str:
    if value == "paper" or (isinstance(value, int) and not isinstance(value, bool)
                            and value >= 1):
        return value
    raise ValueError('must be a positive integer or "paper"')


#: A number of examples, or "paper": training images x the preset's paper_epochs.
Budget = Annotated[int | str, PlainValidator(_budget)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class ConfigError(UserError):
    """A config file that cannot be read, or a key in it with a wrong type or value."""


_Table = Table
#: The ``[source]`` tables of every dataset, told apart by ``kind``.
SOURCE_TABLES: dict[str, type[SourceTable]] = {d.name: d.table for d in DATASETS.values()}
AnySource = Annotated[Union[tuple(SOURCE_TABLES.values())],  # noqa: UP007
                      Field(discriminator="kind")]


class GenerateOptions(_Table):
    """nsa-gen options; ``workers`` changes only the speed, never the store."""

    n: Budget | None = None
    n_by_category: dict[str, Budget] = Field(default_factory=dict)
    preset: str | None = None
    size: PositiveInt | None = None
    workers: PositiveInt | None = None
    chunk_size: PositiveInt = DEFAULT_CHUNK_SIZE
    set: dict[str, Any] = Field(default_factory=dict,
                                validation_alias=AliasChoices("set", "overrides"))
    #: Where the stores go, a folder or an s3:// URL: STORES/<category>/seed<k>.zarr
    #: (default: shards.zarr in each job's folder).
    stores: str | None = None


class TrainOptions(_Table):
    """nsa-train options; unset ones take ``TrainConfig``'s defaults."""

    epochs: PositiveInt | None = None
    steps: PositiveInt | None = None
    batch_size: PositiveInt | None = None
    lr: Annotated[float, Field(gt=0)] | None = None
    min_lr: Annotated[float, Field(ge=0)] | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None
    threads: PositiveInt | None = None
    loader_workers: NonNegativeInt | None = None
    shuffle_chunks: PositiveInt | None = None
    checkpoint_every: PositiveInt | None = None
    log_every: PositiveInt | None = None
    predictions: NonNegativeInt | None = None
    final_layer: FinalLayer | None = None
    workers: PositiveInt | None = Field(
        None, validation_alias=AliasChoices("workers", "num_workers"))

    def given(self) -> dict[str, Any]:
        """The options the config sets (``TrainConfig`` keyword arguments)."""
        return self.model_dump(exclude_none=True)


class EvaluateOptions(_Table):
    """nsa-eval options; unset ones take :func:`nsa.evaluate.run.evaluate`'s defaults."""

    protocol: Literal["nsa", "mvtec"] | None = None
    max_pictures: NonNegativeInt | None = None
    device: Literal["auto", "cpu", "cuda"] | None = None
    batch_size: PositiveInt | None = None

    def given(self) -> dict[str, Any]:
        """The options the config sets (``evaluate`` keyword arguments)."""
        return self.model_dump(exclude_none=True)


class PipelineFile(_Table):
    """The whole TOML file."""

    out: str | None = None
    seeds: list[NonNegativeInt] = Field(default_factory=lambda: [0], min_length=1)
    source: AnySource
    generate: GenerateOptions = Field(default_factory=GenerateOptions)
    train: TrainOptions = Field(default_factory=TrainOptions)
    evaluate: EvaluateOptions = Field(default_factory=EvaluateOptions)


_TABLES: dict[str, type[_Table]] = {
    "generate": GenerateOptions, "train": TrainOptions, "evaluate": EvaluateOptions,
}


@dataclass(frozen=True)
class Job:
    """One (category, seed) pass through generate -> train -> evaluate."""

    category: str
    seed: int
    directory: Path
    #: The job's store: a path, or an s3:// URL.
    store: Path | str

    @property
    def name(self) -> str:
        return f"{self.category}/seed{self.seed}"


@dataclass
class PipelineConfig:
    """A parsed, validated pipeline config; ``path`` is where it was read from.

    ``settings`` maps each category to its resolved synthesis settings (preset, overrides
    and size applied), as nsa-gen will resolve them.
    """

    path: Path
    out: Path
    seeds: list[int]
    source: SourceTable
    generate: GenerateOptions
    train: TrainOptions
    evaluate: EvaluateOptions
    settings: dict[str, dict[str, Any]]
    #: The output root when it is an s3:// URL; ``out`` is then this machine's staging
    #: folder for it (see :mod:`nsa.pipelines.remote_out`).
    out_url: str | None = None
    #: How messages name the output root: ``"<config>: out"``, or ``"--out"`` when given so.
    out_named: str = "out"

    @property
    def categories(self) -> list[str]:
        return list(self.settings)

    def jobs(self) -> list[Job]:
        """Every (category, seed) job, category-major so a category finishes early."""
        return [
            Job(category, seed, self.out / category / f"seed{seed}",
                self._store(category, seed))
            for category in self.categories
            for seed in self.seeds
        ]

    def _store(self, category: str, seed: int) -> Path | str:
        stores = self.generate.stores
        if stores is None and self.out_url is not None:
            return f"{self.out_url}/{category}/seed{seed}/shards.zarr"
        if stores is None:
            return self.out / category / f"seed{seed}" / "shards.zarr"
        if stores.startswith("s3://"):
            return f"{stores.rstrip('/')}/{category}/seed{seed}.zarr"
        return Path(stores) / category / f"seed{seed}.zarr"

    def n_for(self, category: str) -> int:
        """The number of examples to generate for ``category`` (checked at load); for
        ``"paper"``, its training images (listed, not read) x its preset's
        ``paper_epochs``. Raises UserError when the training images cannot be listed."""
        n = self.generate.n_by_category.get(category, self.generate.n)
        assert n is not None, "load_config checks that every category has an n"
        if n != "paper":
            return n
        images = len(self.source.training_source(category).files)
        return paper_budget(self.settings[category]["preset"], images)


def default_preset(source: SourceTable, category: str) -> str | None:
    """The preset nsa-gen uses for ``category`` when none is named (as its sources do)."""
    return DATASETS[source.kind].default_preset(category)


_hint = hint


def _where(loc: tuple[Any, ...]) -> str:
    """``('train', 'steps')`` -> ``[train] steps``; ``('seeds', 1)`` -> ``seeds[1]``."""
    if loc and loc[0] == "source" and len(loc) > 1:
        loc = loc[:1] + loc[2:]  # drop the kind tag pydantic puts in the location
    table = ""
    if len(loc) > 1 and loc[0] in ("source", *_TABLES):
        table, loc = f"[{loc[0]}] ", loc[1:]
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return table + key.lstrip(".")


def _known_keys(parent: tuple[Any, ...]) -> list[str]:
    """The keys allowed in the table at ``parent`` (a pydantic location)."""
    model: type[BaseModel] | None = None
    if not parent:
        model = PipelineFile
    elif parent[0] == "source" and len(parent) >= 2:
        model = SOURCE_TABLES.get(parent[1])
        for key in parent[2:]:  # a nested table, e.g. lists.<name>
            field = model.model_fields.get(str(key)) if model else None
            if field is not None:
                nested = [a for a in typing.get_args(field.annotation) if isinstance(a, type)]
                model = next((a for a in (field.annotation, *nested)
                              if isinstance(a, type) and issubclass(a, BaseModel)), None)
    elif len(parent) == 1:
        model = _TABLES.get(parent[0])
    return list(model.model_fields) if model else []


def _show(value: Any) -> str:
    """A value about as TOML writes it (``true``, ``"abc"``, ``[1, 2]``), at most 60 chars."""
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem(error: dict[str, Any]) -> str:
    """One pydantic error as ``<where>: <what>``."""
    kind, loc, ctx = error["type"], error["loc"], error.get("ctx", {})
    value = _show(error.get("input"))
    expected = str(ctx.get("expected")).replace("'", '"')  # 'a' or 'b' -> "a" or "b"
    if kind == "extra_forbidden":
        return f"{_where(loc)}: unknown key ({_hint(str(loc[-1]), _known_keys(loc[:-1]))})"
    if kind == "union_tag_invalid":  # the only tagged union is [source]
        return f"[source] kind: must be one of {', '.join(SOURCE_KINDS)}, " \
               f"not {_show(ctx.get('tag'))}"
    if kind == "union_tag_not_found":
        return f"[source] kind: missing (one of {', '.join(SOURCE_KINDS)})"
    what = {
        "missing": "missing",
        "greater_than_equal": f"must be at least {ctx.get('ge')}, not {value}",
        "greater_than": f"must be greater than {ctx.get('gt')}, not {value}",
        "int_type": f"must be an integer, not {value}",
        "float_type": f"must be a number, not {value}",
        "string_type": f"must be a string, not {value}",
        "bool_type": f"must be true or false, not {value}",
        "list_type": f"must be a list [...], not {value}",
        "dict_type": f"must be a table, not {value}",
        "model_type": f"must be a table, not {value}",
        "model_attributes_type": f"must be a table, not {value}",
        "literal_error": f"must be {expected}, not {value}",
        "too_short": "must not be empty",
        "value_error": f"{ctx.get('error')}, not {value}",
    }.get(kind)
    if what is None:
        what = f"{error['msg'][:1].lower()}{error['msg'][1:]}, not {value}"
    return f"{_where(loc)}: {what}"


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        where = "" if path.is_absolute() else f" (looked in {Path.cwd()}, the working folder)"
        raise ConfigError(f"{path}: no such config file{where}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except OSError as exc:  # permission denied: exit 2; an I/O error: exit 1
        raise os_error(exc, path) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start} is "
                          f"{exc.object[exc.start:exc.start + 1]!r})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _stage_message(message: str) -> str:
    """A stage's option message in config terms: ``--batch-size`` -> ``batch_size``."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m[1].replace("-", "_"), message)


def _check_categories(path: Path, parsed: PipelineFile, categories: list[str]) -> None:
    repeated = sorted({c for c in categories if categories.count(c) > 1})
    if repeated:
        raise ConfigError(f"{path}: [source] categories: {repeated[0]!r} is given twice")
    seeds = parsed.seeds
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise ConfigError(f"{path}: seeds: {twice[0]} is given twice")
    generate = parsed.generate
    # Budgets of known MVTec categories may stay when the category list is cut down;
    # any other name is a typo that would silently fall back to n.
    dataset = DATASETS[parsed.source.kind]
    known = set(categories) | set(dataset.categories)
    for name in generate.n_by_category:
        if name not in known:
            raise ConfigError(f"{path}: [generate] n_by_category.{name}: not a category of "
                              f"[source] ({_hint(name, categories)})")
    for category in categories:
        if category not in generate.n_by_category and generate.n is None:
            raise ConfigError(f"{path}: [generate] n: missing (give n = ... or "
                              f"n_by_category.{category} = ...)")
    for category in categories if generate.preset is None else []:
        if dataset.default_preset(category) is not None:
            continue
        if not dataset.categories:
            raise ConfigError(f"{path}: [generate] preset: missing (a {dataset.name} source "
                              f"has no default; choose one of {', '.join(PRESETS)})")
        raise ConfigError(
            f"{path}: [source] categories: {category!r} is not an {dataset.title} category "
            f"({_hint(category, dataset.categories)}); or name a [generate] preset")


def _resolve_settings(path: Path, parsed: PipelineFile, category: str) -> dict[str, Any]:
    """Synthesis settings for ``category``, resolved by nsa-gen's own code."""
    source = parsed.source
    generate = parsed.generate
    stand_in = Source(source.kind, category, [], default_preset(source, category))
    try:
        return source_settings(stand_in, generate.preset, generate.set, generate.size)
    except UserError as exc:
        several = len(source.category_names()) > 1 and generate.preset is None
        which = f" (category {category})" if several else ""
        raise ConfigError(f"{path}: [generate]{which} {_stage_message(str(exc))}") from None


def _check_train(path: Path, parsed: PipelineFile) -> None:
    config = TrainConfig(shards=["store"], out="run", seed=parsed.seeds[0],
                         **parsed.train.given())
    try:
        check_config(config)
    except UserError as exc:
        raise ConfigError(f"{path}: [train] {_stage_message(str(exc))}") from None


def load_config(path: str | Path, out: str | Path | None = None) -> PipelineConfig:
    """Read and validate a pipeline config; ``out`` overrides its output root.

    Relative paths in the config (``out``, ``root``, list files) are taken relative to the
    current directory, as a user typing the stage commands would. Raises one-line
    :class:`ConfigError` for a file that cannot be read (missing, a directory, not UTF-8,
    not TOML) and for the first problem with its content (followed by how many more).
    """
    path = Path(path)
    data = _read(path)
    try:
        parsed = PipelineFile.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise ConfigError(f"{path}: {_problem(errors[0])}{more}") from None
    categories = parsed.source.category_names()
    if not all(categories):
        raise ConfigError(f"{path}: [source] name: missing (root has no folder name)")
    _check_categories(path, parsed, categories)
    settings = {category: _resolve_settings(path, parsed, category) for category in categories}
    _check_train(path, parsed)
    try:
        check_protocol(parsed.evaluate.protocol or "nsa")
    except UserError as exc:
        raise ConfigError(f"{path}: [evaluate] {_stage_message(str(exc))}") from None
    root = out if out is not None else parsed.out
    if root is None:
        raise ConfigError(f"{path}: out: missing (set out = \"...\" or pass --out)")
    out_named = "--out" if out is not None else f"{path}: out"
    try:  # a mistyped URL (s3:/b/x, S3://b/x) must not become a local folder
        parse_location(str(root))
    except UserError as exc:
        raise ConfigError(f"{out_named}: {exc}") from None
    if parsed.generate.stores is not None:
        try:
            parse_location(parsed.generate.stores)
        except UserError as exc:
            raise ConfigError(f"{path}: [generate] stores: {exc}") from None
    out_url = str(root).rstrip("/") if is_url(str(root)) else None
    return PipelineConfig(
        path=path, out=staging_root(out_url) if out_url else Path(root),
        seeds=list(parsed.seeds), source=parsed.source,
        generate=parsed.generate, train=parsed.train, evaluate=parsed.evaluate,
        settings=settings, out_url=out_url, out_named=out_named,
    )


def check_inputs(config: PipelineConfig) -> None:
    """Check that the folders and list files ``[source]`` names exist (no image is read).

    Raises :class:`ConfigError` naming the key; a category folder or list file whose
    content is unusable is found when its job starts, and fails that job only.
    """
    if config.out_url is not None:
        try:
            parse_location(config.out_url).check()
        except UserError as exc:
            raise ConfigError(f"{config.out_named}: {exc}") from None
    if config.generate.stores is not None:  # an object store: credentials, bucket, server
        try:
            parse_location(config.jobs()[0].store).check()
        except UserError as exc:
            raise ConfigError(f"{config.path}: [generate] stores: {exc}") from None
    try:
        config.source.check_inputs()
    except UserError as exc:
        raise ConfigError(f"{config.path}: {exc}") from None
