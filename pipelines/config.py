"""Pipeline configs: a TOML file naming the data, categories, seeds and per-stage options.

A config reads top to bottom like the job it describes::

    out = "runs/elpv-demo"          # output root (``--out`` overrides)
    seeds = [0, 1]

    [source]                        # where the normal training images come from
    kind = "elpv"                   # mvtec | chestxray | folder | elpv
    cell_type = "mono"              # elpv: mono | poly

    [generate]                      # nsa-gen options, same names as the CLI
    n = 8000                        # or n_by_category = { zipper = 76800, ... }
    size = 128

    [train]                         # nsa-train options
    epochs = 1
    batch_size = 32

    [evaluate]                      # nsa-eval options
    protocol = "nsa"

Every option has the name it has on the stage's command line (with ``_`` for ``-``), so
a config is what a user would otherwise type three times per category.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from nsa.errors import UserError

SOURCE_KINDS = ("mvtec", "chestxray", "folder", "elpv")
GENERATE_KEYS = {"n", "n_by_category", "preset", "size", "workers", "chunk_size", "overrides"}
TRAIN_KEYS = {"epochs", "steps", "batch_size", "device", "lr", "num_workers", "loader_workers",
              "checkpoint_every"}
EVALUATE_KEYS = {"protocol", "max_pictures", "device", "batch_size"}


class ConfigError(UserError):
    """A config file that cannot be read or names something unknown."""


@dataclass(frozen=True)
class Job:
    """One (category, seed) pass through generate -> train -> evaluate."""

    category: str
    seed: int
    directory: Path

    @property
    def name(self) -> str:
        return f"{self.category}/seed{self.seed}"


@dataclass
class PipelineConfig:
    """A parsed, validated pipeline config; ``path`` is where it was read from."""

    path: Path
    out: Path
    seeds: list[int]
    source: dict[str, Any]
    categories: list[str]
    generate: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    evaluate: dict[str, Any] = field(default_factory=dict)

    def jobs(self) -> list[Job]:
        """Every (category, seed) job, category-major so a category finishes early."""
        return [
            Job(category, seed, self.out / category / f"seed{seed}")
            for category in self.categories
            for seed in self.seeds
        ]

    def n_for(self, category: str) -> int:
        """The number of examples to generate for ``category``."""
        by_category = self.generate.get("n_by_category", {})
        n = by_category.get(category, self.generate.get("n"))
        if n is None:
            raise ConfigError(f"{self.path}: [generate] gives no n for category {category!r}")
        return int(n)


def _check_keys(path: Path, table: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) in [{table}]: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(allowed))})"
        )


def _categories(path: Path, source: dict[str, Any]) -> list[str]:
    kind = source["kind"]
    if kind == "elpv":
        cell_type = source.get("cell_type", "mono")
        if cell_type not in ("mono", "poly"):
            raise ConfigError(f"{path}: [source] cell_type must be mono or poly")
        return [cell_type]
    if kind == "mvtec":
        categories = source.get("categories")
        if not categories:
            raise ConfigError(f"{path}: [source] of kind mvtec needs categories = [...]")
        return list(categories)
    if kind == "chestxray":
        lists = source.get("lists")
        if not lists:
            raise ConfigError(
                f"{path}: [source] of kind chestxray needs [source.lists] "
                "(name = {train = ..., normal_test = ..., anomaly_test = ...})"
            )
        return list(lists)
    return [source.get("name", Path(source.get("root", "folder")).name)]


def load_config(path: str | Path, out: str | Path | None = None) -> PipelineConfig:
    """Read and validate a pipeline config; ``out`` overrides its output root.

    Relative paths in the config (``out``, ``root``, list files) are taken relative to the
    current directory, as a user typing the stage commands would.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    _check_keys(path, "top level", data,
                {"out", "seeds", "source", "generate", "train", "evaluate"})
    source = data.get("source")
    if not isinstance(source, dict) or source.get("kind") not in SOURCE_KINDS:
        raise ConfigError(f"{path}: [source] kind must be one of {', '.join(SOURCE_KINDS)}")
    generate = data.get("generate", {})
    train = data.get("train", {})
    evaluate = data.get("evaluate", {})
    _check_keys(path, "generate", generate, GENERATE_KEYS)
    _check_keys(path, "train", train, TRAIN_KEYS)
    _check_keys(path, "evaluate", evaluate, EVALUATE_KEYS)
    seeds = data.get("seeds", [0])
    if not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise ConfigError(f"{path}: seeds must be a non-empty list of non-negative integers")
    root = out if out is not None else data.get("out")
    if root is None:
        raise ConfigError(f"{path}: no output root: set out = \"...\" or pass --out")
    config = PipelineConfig(
        path=path, out=Path(root), seeds=list(seeds), source=source,
        categories=_categories(path, source), generate=generate, train=train,
        evaluate=evaluate,
    )
    for category in config.categories:
        config.n_for(category)
    return config
