"""What every dataset layout describes, and what the layouts of category folders share.

A :class:`Dataset` is one layout: its name (the ``nsa-gen``/``nsa-eval`` subcommand and the
``kind`` of a pipeline config's ``[source]``), its known categories, its own command-line
options, how it finds training images (a :class:`~nsa.generate.sources.Source`) and test
sets (:class:`~nsa.evaluate.testsets.TestSet`), its default preset and its pipeline table
(a :class:`SourceTable`). The CLIs add the options every subcommand shares
(:mod:`nsa.generate.cli`, :mod:`nsa.evaluate.cli`); the pipeline reads the tables.

Most layouts are "a root holding one folder per category" (MVTec AD and its kin, VisA):
:func:`category_dataset` builds those from two functions, ``train(root, category)`` and
``test(root, category)``.
"""

from __future__ import annotations

import difflib
import inspect
from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import typer
from nsa.evaluate.testsets import TestSet
from nsa.generate.sources import Source, categories_found
from pydantic import BaseModel, ConfigDict, Field, create_model

from nsa.errors import UserError

#: The environment variable ``--root`` falls back to.
ROOT_VARIABLE = "NSA_DATA_ROOT"
#: The preset of layouts whose categories have no preset of their own: an MVTec AD object
#: preset without an object mask (transistor's row), fit for objects on any background.
GENERIC_PRESET = "transistor"


class Table(BaseModel):
    """A TOML table: strict types, no keys beyond the declared ones."""

    model_config = ConfigDict(extra="forbid", strict=True)


class SourceTable(Table):
    """A pipeline config's ``[source]`` table: where one layout's data lies.

    Each method answers for one category of :meth:`categories`; errors are UserErrors
    whose message starts with ``[source] <key>:`` (the pipeline adds the config's path).
    """

    kind: str

    @abstractmethod
    def category_names(self) -> list[str]:
        """The categories (jobs) this source names, in order."""

    @abstractmethod
    def training_source(self, category: str) -> Source:
        """The normal images a job of ``category`` generates from."""

    @abstractmethod
    def test_sets(self, category: str) -> list[TestSet]:
        """The labelled test sets a job of ``category`` is evaluated on."""

    @abstractmethod
    def source_identity(self, category: str) -> dict[str, Any]:
        """What :meth:`training_source` reads (absolute paths): the generate hash's part."""

    @abstractmethod
    def testset_identity(self, category: str) -> dict[str, Any]:
        """What :meth:`test_sets` reads (absolute paths): the evaluate hash's part."""

    @abstractmethod
    def check_inputs(self) -> None:
        """Refuse missing folders and files before any job starts (no image is read)."""

    def before_evaluate(self, run: Path, category: str, progress: bool) -> None:
        """What a job does to its run before evaluating it (nothing, unless a layout
        calibrates on held-out images)."""


@dataclass(frozen=True)
class Dataset:
    """One layout of data, as the CLIs and the pipeline see it.

    ``gen_options``/``eval_options`` are keyword-only :class:`inspect.Parameter` s with
    ``Annotated[type, typer.Option(...)]`` annotations: the options this layout adds to
    the shared ones of ``nsa-gen``/``nsa-eval``; ``source``/``testsets`` take their values
    as keyword arguments. ``out_name`` (same arguments as ``source``) is the stem of
    ``nsa-gen``'s default ``--out``. ``default_preset(category)`` is None where the user
    must choose one. ``categories`` are the known ones (help, hints); empty: any name.
    """

    name: str
    title: str
    summary: str
    categories: tuple[str, ...]
    table: type[SourceTable]
    gen_options: tuple[inspect.Parameter, ...]
    eval_options: tuple[inspect.Parameter, ...]
    source: Callable[..., Source]
    testsets: Callable[..., list[TestSet]]
    out_name: Callable[..., str]
    default_preset: Callable[[str], str | None]


def option(name: str, annotation: Any, default: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A keyword-only parameter for a generated command."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=annotation)


def root_option(help_text: str, multiple: bool = False) -> inspect.Parameter:
    """``--root``, falling back to :data:`ROOT_VARIABLE`; checked by :func:`need_root`."""
    kind = list[Path] | None if multiple else Path | None
    return option("root", Annotated[kind, typer.Option(
        "--root", envvar=ROOT_VARIABLE, show_envvar=False,
        help=f"{help_text} Default: ${ROOT_VARIABLE}.")], None)


def need_root(root: Path | None, what: str) -> Path:
    """``root``, or UserError when neither ``--root`` nor :data:`ROOT_VARIABLE` gave one."""
    if root is None or str(root) == "":
        raise UserError(f"--root: give the {what} (--root DIR, or set {ROOT_VARIABLE})")
    return root


def hint(name: str, known: Sequence[str]) -> str:
    """``did you mean 'x'?`` for a close name, else the known names (8 at most)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    shown = ", ".join(known[:8]) + (", ..." if len(known) > 8 else "")
    return f"known: {shown}" if known else "none known"


def absolute(path: str | Path) -> str:
    """``path`` made absolute, as text (for the pipeline's hashes)."""
    return str(Path(path).absolute())


def need_path(key: str, target: Path, folder: bool = True) -> None:
    """UserError ``[source] <key>: <target> does not exist`` unless ``target`` is a folder
    (``folder``) or a file."""
    ok = target.is_dir() if folder else target.is_file()
    if not ok:
        what = "folder" if folder else "file"
        reason = "does not exist" if not target.exists() else f"is not a {what}"
        raise UserError(f"[source] {key}: {target} {reason}")


class CategoriesTable(SourceTable):
    """``root`` holding one folder per category; ``categories`` to run."""

    #: The folders (relative to a category's) that mark a category, for hints.
    train_folders: ClassVar[tuple[str, ...]] = ("train/good",)

    root: str
    categories: list[str] = Field(min_length=1)

    def _dataset(self) -> Dataset:
        from nsa.datasets import dataset

        return dataset(self.kind)

    def category_names(self) -> list[str]:
        return list(self.categories)

    def training_source(self, category: str) -> Source:
        return self._dataset().source(root=Path(self.root), category=category)

    def test_sets(self, category: str) -> list[TestSet]:
        return self._dataset().testsets(root=Path(self.root), category=[category])

    def source_identity(self, category: str) -> dict[str, Any]:
        return {"kind": self.kind, "root": absolute(self.root), "category": category}

    def testset_identity(self, category: str) -> dict[str, Any]:
        return self.source_identity(category)

    def check_inputs(self) -> None:
        root = Path(self.root)
        need_path("root", root)
        for category in self.categories:
            if not (root / category).is_dir():
                found = categories_found(root, self.train_folders)
                known = hint(category, found) if found else "no category/train/good there"
                raise UserError(f"[source] categories: no folder {category!r} in "
                                f"{self.root} ({known})")


def category_dataset(
    name: str, title: str, summary: str, categories: Sequence[str],
    train: Callable[[Path, str], Source], test: Callable[[Path, str], list[TestSet]],
    default_preset: Callable[[str], str | None], train_folders: Sequence[str] = ("train/good",),
) -> Dataset:
    """A layout of one folder per category under a root: ``--root`` (default
    ``$NSA_DATA_ROOT``) and ``--category`` (repeatable for ``nsa-eval``), a ``[source]``
    table ``kind``, ``root``, ``categories``; ``train_folders`` are what marks a category
    folder (for hints)."""
    table = create_model(f"{title.replace(' ', '')}Source", __base__=CategoriesTable,
                         kind=(Literal[name], ...))  # type: ignore[call-overload]
    table.train_folders = tuple(train_folders)
    known = f" ({', '.join(categories)})" if categories else ""
    root = root_option(f"{title} root (holding one folder per category).")

    def source(root: Path | None, category: str) -> Source:
        return train(need_root(root, f"{title} root"), category)

    def testsets(root: Path | None, category: list[str]) -> list[TestSet]:
        found = need_root(root, f"{title} root")
        return [testset for c in category for testset in test(found, c)]

    return Dataset(
        name=name, title=title, summary=summary, categories=tuple(categories), table=table,
        gen_options=(root, option("category", Annotated[str, typer.Option(
            "--category", help=f"{title} category{known}.")])),
        eval_options=(root, option("category", Annotated[list[str], typer.Option(
            "--category", help=f"{title} category to evaluate{known}; repeat for several.")])),
        source=source, testsets=testsets,
        out_name=lambda root, category: category if name == "mvtec" else f"{name}-{category}",
        default_preset=default_preset,
    )
