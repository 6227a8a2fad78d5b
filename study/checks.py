"""The checks before Ray starts that need neither torch nor Ray: the storage takes the study's files, and
a study with results is continued only on purpose. They answer in about a second, wherever the study is."""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from analysis.store import ResultsStore, join, resolve, write_atomic
from analysis.words import every
from study.config import StudyConfig
from study.plan import local_path, unmeasurable_note, with_stored_ids
from trainables.trial import TrialSpec


class SweepError(RuntimeError):
    """The study cannot run as asked on this cluster or storage; the message says what to change."""


def study_root(study: StudyConfig) -> str:
    return join(local_path(study.storage), study.name)


def check_storage(study: StudyConfig) -> None:
    """The storage must take the study's files: said before Ray starts, not as a traceback after. A remote
    one must answer now (one try through pyarrow's own few retries; the outage retries are for later)."""
    if "://" in study.storage:
        root = study_root(study)
        try:
            inner, path = pafs.FileSystem.from_uri(root)
            inner.get_file_info(path)
        except (OSError, ValueError) as error:
            said = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            raise SweepError(
                f"storage: {root.split('?', 1)[0]} cannot be reached ({said}); check the endpoint (the URI's "
                "endpoint_override or AWS_ENDPOINT_URL), the credentials and the network, or pass --storage"
            ) from None
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


# The settings that make a study what it is, beside its sweep: a resumed study with any of them changed
# would train new trials next to the old ones, and the figures would pool the two as seeds. Left out:
# where the data lies (data.root: the same images moved) and whether torch.compile runs (speed only);
# the sweep (more values add trials), resources, measurements and search are free to change.
IDENTITY_SECTIONS = ("data", "model", "optim", "schedule", "eval")
NOT_IDENTITY = {"data.root", "model.compile"}
IDENTITY_FILE = "study.json"


def study_identity(config: dict[str, Any]) -> dict[str, Any]:
    """'section.key' -> value of a resolved study file's identity settings (config: StudyConfig.to_dict())."""
    return {
        f"{section}.{key}": value
        for section in IDENTITY_SECTIONS
        for key, value in (config.get(section) or {}).items()
        if f"{section}.{key}" not in NOT_IDENTITY
    }


def study_json(study_dir: str) -> dict[str, Any] | None:
    """What the study's first run wrote to study.json; None where there is none (or it cannot be read)."""
    fs, path = resolve(join(study_dir, IDENTITY_FILE))
    try:
        with fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())
    except (FileNotFoundError, ValueError):
        return None
    except OSError as error:  # pyarrow says "not found" in words on some filesystems
        if "not found" not in str(error).lower() and "no such file" not in str(error).lower():
            raise
        return None


def study_uid(study_dir: str) -> str:
    """This study's own id, minted on its first run: a tracker's run of a trial belongs to this study, not to
    an earlier one of the same name whose results were deleted. Stores from before it: their folder's."""
    recorded = study_json(study_dir) or {}
    return str(recorded.get("uid") or hashlib.sha1(study_dir.encode()).hexdigest()[:16])


def recorded_study(study_dir: str, store: ResultsStore, key: str) -> dict[str, Any] | None:
    """`key` ("identity" or "config") of what the study's first run recorded in study.json, else of its
    newest trial row's resolved study file (stores from before study.json); None when neither exists."""
    recorded = study_json(study_dir)
    if recorded is not None and key in recorded:
        return recorded[key]
    trials = store.read("trials")
    configs = trials["config"].dropna() if "config" in trials else []
    if not len(configs):
        return None
    config = json.loads(configs.iloc[-1])
    return study_identity(config) if key == "identity" else config


def stored_identity(study: StudyConfig, store: ResultsStore) -> dict[str, Any] | None:
    """The identity the study was started with (`recorded_study`)."""
    return recorded_study(study_root(study), store, "identity")


def record_identity(study: StudyConfig, data_fingerprint: str | None = None) -> None:
    """Write study.json on a study's first run (never over an existing one: it is what --resume checks);
    a study.json from before data fingerprints gets the data's, once."""
    fs, path = resolve(join(study_root(study), IDENTITY_FILE))
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        # the whole resolved study file too: study.status plans the trials from it before any has ended
        body = {
            "study": study.name,
            "uid": uuid.uuid4().hex[:16],  # study_uid
            "identity": study_identity(study.to_dict()),
            "config": study.to_dict(),
            "data_fingerprint": data_fingerprint,
        }
    else:
        body = study_json(study_root(study)) or {}
        if body.get("data_fingerprint") or not data_fingerprint or not body:
            return
        body["data_fingerprint"] = data_fingerprint
    write_atomic(join(study_root(study), IDENTITY_FILE), json.dumps(body, indent=1, sort_keys=True).encode())


def check_data_fingerprint(study: StudyConfig, data_fingerprint: str | None) -> None:
    """--resume on other images than the study was started with (the same folder refilled, another copy)
    would pool trainings on two datasets as seeds: refused in one line. Where the images lie never counts."""
    recorded = (study_json(study_root(study)) or {}).get("data_fingerprint")
    if recorded and data_fingerprint and recorded != data_fingerprint:
        raise SweepError(
            f"data: {study.data.root} holds other images than study {study.name!r} was started with (content "
            f"fingerprint {recorded} -> {data_fingerprint}); point data.root at the images it was started with, "
            "or give the study a new name (or --storage) to start it anew"
        )


def check_fresh(study: StudyConfig, resume: bool) -> None:
    """A study with results is continued only on purpose (--resume), and only with the settings it was
    started with: said before Ray starts."""
    store = ResultsStore.for_study(local_path(study.storage), study.name)
    if not store.is_store():
        return
    if not resume:
        raise SweepError(
            f"study {study.name!r} already has results in {store.root}; pass --resume to continue it, "
            "or change name (or --storage) to start a new one"
        )
    before = stored_identity(study, store)
    now = study_identity(study.to_dict())
    changed = sorted(k for k in set(before or {}) | set(now) if before is not None and before.get(k) != now.get(k))
    if changed:
        said = "; ".join(f"{k}: {json.dumps((before or {}).get(k))} -> {json.dumps(now.get(k))}" for k in changed)
        raise SweepError(
            f"--resume: study {study.name!r} was started with other settings ({said}); resuming would train "
            "new trials beside the old ones and pool them. Undo the change to continue it, or give the "
            "changed study a new name (or --storage) to start it anew"
        )


def nothing_left(study: StudyConfig, plan: list[TrialSpec]) -> str | None:
    """On --resume, what to say when the study is done (every planned trial finished, every measurement
    its completed trials ask for written), from the store alone: no Ray started for it. None: work left."""
    from study.measure import jobs_to_do

    store = ResultsStore.for_study(local_path(study.storage), study.name)
    if not store.is_store():
        return None
    stored = store.read("trials")
    adopted = with_stored_ids(plan, stored)
    planned, finished = [t.trial_id for t in adopted], store.finished_trials()
    if not set(planned) <= finished:
        return None
    # a trial's epoch rows missing or unreadable is work too: run_study restores them from its checkpoint
    epochs = store.read("epochs")
    if store.unreadable or not set(planned) <= set(epochs["trial_id"]):
        return None
    jobs, todo = jobs_to_do(study, store)  # study.measure's own answer: missing or stale ones are work
    if todo:
        return None
    report = join(study_root(study), "report.html")
    fs, path = resolve(report)
    found = fs.get_file_info(path).type != pafs.FileType.NotFound
    unmeasurable = unmeasurable_note(adopted, stored, finished)
    return (unmeasurable + "\n" if unmeasurable else "") + (
        f"{study.name}: nothing to do: {every(len(planned), 'trial')} finished and "
        f"{every(len(jobs), 'measurement')} written "
        f"({'report: ' + report + '; ' if found else ''}python -m analysis.report {store.uri} "
        f"{'builds it again' if found else 'builds the report'})"
    )


def folders_to_create(study: StudyConfig) -> list[Path]:
    """The study folder and those above it that do not exist yet (local storage), deepest first: what a
    run that fails its checks removes again (when empty: never a file, never a folder that was there)."""
    if "://" in study.storage:
        return []
    missing, folder = [], Path(study_root(study)).absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_created(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; rmdir removes only an empty folder
        try:
            folder.rmdir()
        except OSError:
            return
