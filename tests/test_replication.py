"""The replication study's committed results (docs/replication/, made by studies/cpu-replication.yaml and
`python -m analysis.export`): the findings the project computes from them equal those an independent script
computes with scipy alone, and README's findings table is the project's table of them."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest
from conftest import ROOT

from analysis.findings import findings_markdown, paper_findings
from analysis.load import load_results

FOLDER = ROOT / "docs" / "replication"


def findings() -> list:
    results = load_results(str(FOLDER))
    return paper_findings(results.trials, results.sharpness, results.landscape, results.trial_roles)


def test_the_committed_results_are_the_replication_studys_with_their_conditions() -> None:
    record = json.loads((FOLDER / "record.json").read_text())
    assert json.loads(record["config"])["name"] == "cpu-replication"
    trials = load_results(str(FOLDER)).trials
    assert len(trials) == 12 and set(trials["status"]) == {"completed"}
    assert sorted(trials["seed"].unique()) == [0, 1, 2] and sorted(trials["batch_size"].unique()) == [64, 2048]
    for column in ("git_revision", "device", "torch_version", "finished_at"):
        assert trials[column].notna().all(), column
    assert sum(p.stat().st_size for p in FOLDER.glob("*.csv")) < 300_000  # 241 KB: every row keeps its provenance


def test_an_independent_script_rederives_every_finding() -> None:
    spec = importlib.util.spec_from_file_location("rederive", FOLDER / "rederive.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    theirs = {(row[0], row[1]): row[2:] for row in module.rederive(FOLDER)}
    ours = {(f.context, f.claim): f for f in findings()}
    assert set(theirs) == set(ours), sorted(set(theirs) ^ set(ours))
    for key, (value, low, high, n) in theirs.items():
        estimate = ours[key].estimate
        for a, b in ((estimate.value, value), (estimate.low, low), (estimate.high, high)):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9, rel=1e-9), key
        assert estimate.n.startswith(f"{n} seed"), (key, estimate.n)


def test_readme_holds_the_findings_table_of_the_committed_results() -> None:
    readme = (ROOT / "README.md").read_text()
    marker = r"<!-- findings: python -m analysis.findings docs/replication -->\n(.*?)<!-- /findings -->"
    table = re.search(marker, readme, re.S)
    assert table, "README lacks the replication study's findings table between its markers"
    assert table.group(1) == findings_markdown(findings())
