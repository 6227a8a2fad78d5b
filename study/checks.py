"""The checks before Ray starts that need neither torch nor Ray: the storage takes the study's files, and
a study with results is continued only on purpose. They answer in about a second, wherever the study is."""

from __future__ import annotations

import os
from pathlib import Path

from analysis.store import ResultsStore, join
from study.config import StudyConfig
from study.plan import local_path


class SweepError(RuntimeError):
    """The study cannot run as asked on this cluster or storage; the message says what to change."""


def study_root(study: StudyConfig) -> str:
    return join(local_path(study.storage), study.name)


def check_storage(study: StudyConfig) -> None:
    """A local storage folder must take the study's files: said before Ray starts, not as a traceback after."""
    if "://" in study.storage:
        return
    folder = Path(study_root(study))
    probe = folder / f".write-check-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise SweepError(
            f"storage: {folder} cannot be written ({error.strerror or error}); pass --storage with a folder you can "
            "write, or change storage in the study file"
        ) from None


def check_fresh(study: StudyConfig, resume: bool) -> None:
    """A study with results is continued only on purpose (--resume): said before Ray starts."""
    store = ResultsStore.for_study(local_path(study.storage), study.name)
    if store.is_store() and not resume:
        raise SweepError(
            f"study {study.name!r} already has results in {store.root}; pass --resume to continue it, "
            "or change name (or --storage) to start a new one"
        )
