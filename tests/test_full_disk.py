"""A full disk: storage on a real 1 MiB tmpfs. The trials cannot write their checkpoints; the run ends with
one line naming the storage and how to go on (exit 2), leaves no temporary file behind, and once space
is freed (the tmpfs grown in place) `--resume` completes the study, every epoch row once."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, tiny_study_yaml

pytestmark = pytest.mark.cluster  # a tmpfs mounted as root


def sweep(study_file: Path, address: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAY_ADDRESS": address}
    command = [sys.executable, "-m", "study.run_sweep", str(study_file), *extra]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_a_full_disk_is_one_line_and_the_study_resumes_once_space_is_freed(ray_session: str, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        study_file = tmp_path / "full.yaml"
        study_file.write_text(tiny_study_yaml("full", disk).replace("mixup_alpha: [0.0, 1.0]", "mixup_alpha: [0.0]"))
        full = sweep(study_file, ray_session)
        assert full.returncode == 2, full.stdout[-3000:] + full.stderr[-3000:]
        ours = [line for line in full.stderr.splitlines() if "WARNING" not in line]
        assert len(ours) == 1 and "Traceback" not in full.stderr + full.stdout, full.stderr[-3000:]
        assert ours[0].startswith(f"error: storage: {disk / 'full'} is full (") and "No space left" in ours[0]
        assert ours[0].endswith(f"then continue with: python -m study.run_sweep {study_file} --resume")
        assert not [p for p in disk.rglob("*") if p.name.endswith(".tmp")]  # no half-written file left

        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
        resumed = sweep(study_file, ray_session, "--resume")
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        trials = pd.read_parquet(disk / "full" / "results" / "trials")
        epochs = pd.read_parquet(disk / "full" / "results" / "epochs")
        assert sorted(trials["status"]) == ["completed", "completed"]
        assert len(epochs) == 4 and not epochs.duplicated(["trial_id", "epoch"]).any()
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
