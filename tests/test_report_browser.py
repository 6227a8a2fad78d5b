"""The report as a reader sees it: rendered by headless Chromium from disk, then read back from the DOM.

One study with what used to hide things: 4 completed and 4 failed trials of the same conditions,
evaluation every 5 epochs, an interpolation whose loss is not finite at one point, four 2-D surfaces
of different sharpness, and long trial ids.
"""

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import chromium_flags

from analysis.report import write_report
from analysis.store import ResultsStore, epoch_schema, trial_schema
from study.config import parse_study
from study.plan import plan_study
from trainables.trial import EpochMetrics, TrialSpec

pytestmark = pytest.mark.slow  # Chromium

STUDY = """
name: reader
data: {dataset: cifar10}
schedule: {epochs: 20, decay: constant}
sweep: {batch_size: [128, 8192], mixup_alpha: [0.0, 1.0], seed: [0, 1]}
eval: {every_epochs: 5}
"""


def write_study(root: Path) -> tuple[ResultsStore, list[str]]:
    store = ResultsStore(str(root / "reader" / "results"))
    completed = []
    for spec in plan_study(parse_study(STUDY)):
        failed = spec.seed == 1
        history = []
        for epoch in range(1, 21):
            evaluated = epoch % 5 == 0 and not failed
            acc = 0.9 - 0.1 * (spec.batch_size > 128) + 0.03 * (spec.mixup_alpha > 0) - 0.5 * np.exp(-epoch / 5)
            history.append(
                {
                    "trial_id": spec.trial_id,
                    "epoch": epoch,
                    "step": epoch * 50_000 // spec.batch_size,
                    "train_loss": 2 * np.exp(-epoch / 6),
                    "clean_train_acc": min(acc + 0.08, 1.0) if evaluated else np.nan,
                    "test_acc": acc if evaluated else np.nan,
                    "clean_train_loss": 1.5 * np.exp(-epoch / 6) if evaluated else np.nan,
                    "test_loss": 1.7 * np.exp(-epoch / 7) + 0.3 if evaluated else np.nan,
                    "epoch_time_s": 10.0,
                    "images_per_s": 5000.0,
                    "diverged": False,
                }
            )
        if not failed:
            store.write("epochs", spec.trial_id, history, epoch_schema(EpochMetrics))
            completed.append(spec.trial_id)
        final = history[-1]
        row = {
            **spec.to_dict(),
            "status": "failed" if failed else "completed",
            "error": "DataError: the data root is gone\nmore of the traceback" if failed else None,
            "epochs_completed": 0 if failed else 20,
            "final_test_acc": None if failed else final["test_acc"],
            "best_test_acc": None if failed else final["test_acc"],
            "final_clean_train_acc": None if failed else final["clean_train_acc"],
            "gap_acc": None if failed else final["clean_train_acc"] - final["test_acc"],
            "device": "cpu",
        }
        store.write("trials", spec.trial_id, [row], trial_schema(TrialSpec))
    grid = np.linspace(-1, 1, 21)
    for trial_id, sharpness in zip(completed, (1.0, 0.7, 15.0, 8.0)):
        points = [
            {"job": "r2", "kind": "random2d", "trial_a": trial_id, "x": x, "y": y, "split": "train"}
            | {"loss": sharpness * (x * x + 0.5 * y * y) + 0.02}
            for x in grid
            for y in grid
        ]
        store.write("landscape", f"r2-{trial_id}", points)
    line = np.linspace(-0.5, 1.5, 21)
    points = [
        {"job": "i", "kind": "interp1d", "trial_a": completed[0], "trial_b": completed[2], "x": x, "split": split}
        | {"loss": np.nan if x < -0.4 else 0.2 + 3 * (x - 0.2) ** 2, "acc": 0.9 - 0.3 * abs(x - 0.3), "bn_clamped": 0}
        for x in line
        for split in ("train", "test")
    ]
    store.write("landscape", "interp", points)
    return store, completed


def rendered_dom(flags: list[str], report: Path) -> str:
    """The report's DOM after Chromium ran its scripts, in a 1300-px-wide window."""
    return subprocess.run(
        [*flags, "--window-size=1300,4000", "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout


def section(dom: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', dom, re.S)
    assert match, f"no section {name}"
    return match.group(1)


def test_what_a_reader_relies_on_is_drawn(tmp_path: Path) -> None:
    flags = chromium_flags(tmp_path)
    store, completed = write_study(tmp_path)
    dom = rendered_dom(flags, write_report(store.root))

    # The answer comes first: the findings table is the report's first section, and with one completed
    # seed per condition it gives no verdict: each claim says which way it leans, and why no more.
    assert re.search(r"<section id=\"(\w+)\"", dom).group(1) == "findings"
    findings = section(dom, "findings")
    assert "mixup a=1 raises test accuracy at batch 128" in findings and "one seed: no interval" in findings
    verdicts = re.findall(r"<span style=[^>]*>([^<]+)</span>", findings)
    from analysis.findings import LEANS_AGAINST, LEANS_FOR, LEANS_NEITHER

    assert verdicts and set(verdicts) <= {LEANS_FOR, LEANS_AGAINST, LEANS_NEITHER}, verdicts

    # Every completed trial's curves are drawn beside the failed ones, each a connected line through the
    # evaluated epochs (4 trials x train/test x accuracy/loss), not isolated points between gaps.
    curves = section(dom, "learning_curves")
    lines = re.findall(r'class="js-line" d="([^"]*)"', curves)
    connected = [d for d in lines if d.startswith("M") and d.count("L") >= 3]
    assert len(connected) == 4 * 2 * 2, f"{len(connected)} connected lines of {len(lines)}"

    # The non-finite interpolation point is marked and said.
    interpolation = section(dom, "interpolation_1")
    assert "loss not finite (marked at the top)" in interpolation and "loss not finite at a = -0.5" in interpolation

    # One colour bar for the four surfaces, and every panel square on screen.
    surfaces = section(dom, "random_directions_1")
    assert len(re.findall(r'class="cb\w* colorbar"', surfaces)) == 1
    panels = re.findall(r'class="nsewdrag drag"[^>]*?width="([\d.]+)" height="([\d.]+)"', surfaces)
    panels = panels or [
        (w, h) for h, w in re.findall(r'class="nsewdrag drag"[^>]*?height="([\d.]+)"[^>]*?width="([\d.]+)"', surfaces)
    ]
    assert len(panels) == 4 and all(abs(float(w) - float(h)) <= 1.5 for w, h in panels), panels

    # The same four surfaces in 3-D: a WebGL scene each, drawn (Chromium's software WebGL here).
    view = section(dom, "random_directions_2")
    assert len(re.findall(r"<canvas", view)) == 4 and "WebGL is not supported" not in view

    # The table holds every trial with its whole id; a failed trial's error is folded to its first line.
    table = section(dom, "trials_table")
    for trial_id in completed:
        assert f">{trial_id}<" in table
    assert table.count("<tr style=") == 8 and "<summary>DataError: the data root is gone</summary>" in table


MEASURE_SCRIPT = """<script>
window.addEventListener('load', () => setTimeout(() => {
  const wide = [];
  document.querySelectorAll('section').forEach(sec => {
    const svg = sec.querySelector('svg.main-svg');
    if (!svg) return;
    const box = svg.getBoundingClientRect();
    sec.querySelectorAll('svg text').forEach(t => {
      const r = t.getBoundingClientRect();
      if (r.width > 0 && (r.right > box.right + 1 || r.left < box.left - 1))
        wide.push([sec.id, t.textContent.slice(0, 80)]);
    });
  });
  const heads = Array.from(document.querySelectorAll('table.trials th'));
  const visible = heads.filter(h => h.getBoundingClientRect().right <= window.innerWidth).map(h => h.textContent);
  const ticks = Array.from(document.querySelectorAll('#steps_to_target .ytick text')).map(t => t.textContent);
  const pre = document.createElement('pre');
  pre.id = 'measured';
  pre.textContent = JSON.stringify({wide, visible, ticks});
  document.body.appendChild(pre);
}, 500));
</script>"""


def test_every_figure_reads_right_on_a_1280_px_screen(tmp_path: Path) -> None:
    """No text wider than its figure (an interpolation whose caveats are long: clamped points far above
    the axis, no grid point at a = 1), steps-to-target ticks at clean values, and the trial table's key
    columns (id, status, results) visible without scrolling at 1280 px."""
    import json

    flags = chromium_flags(tmp_path)
    store, completed = write_study(tmp_path)
    line = np.linspace(-0.45, 1.45, 20)  # no grid point at a = 0 or 1
    points = [
        {"job": "j", "kind": "interp1d", "trial_a": completed[1], "trial_b": completed[3], "x": x, "split": split}
        | {"loss": 4.1e4 if x > 1.15 else 0.3 + (x - 0.4) ** 2, "acc": 0.8, "bn_clamped": 3 if x > 1.15 else 0}
        | {"bn": "interpolated"}
        for x in line
        for split in ("train", "test")
    ]
    store.write("landscape", "interp-clamped", points)
    report = write_report(store.root)
    page = report.read_text().replace("</body>", MEASURE_SCRIPT + "</body>")
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(page)
    dom = subprocess.run(
        [*flags, "--window-size=1280,3000", "--dump-dom", measured_page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    found = json.loads(re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S).group(1).replace("&quot;", '"'))
    assert found["wide"] == [], found["wide"]
    assert len(found["ticks"]) >= 3, found["ticks"]
    assert {"trial id", "status", "final test acc", "gap acc"} <= set(found["visible"]), found["visible"]
    interpolation = section(dom, "interpolation_2")
    assert "no grid point here" in interpolation and "at its top edge" in interpolation


def legend_colours(sec: str) -> dict[str, str]:
    """Legend entry text -> the colour of its line, as drawn."""
    entries = re.findall(r'<g class="traces"[^>]*>(.*?)</g></g>', sec, re.S)
    colours = {}
    for entry in entries:
        text = re.search(r'class="legendtext"[^>]*>([^<]+)<', entry)
        stroke = re.search(r'class="js-line"[^>]*style="[^"]*stroke: (rgb\([^)]*\))', entry)
        if text and stroke:
            colours[text.group(1)] = stroke.group(1)
    return colours


def test_the_accuracy_figure_promises_only_what_it_draws(tmp_path: Path) -> None:
    """One completed seed per condition: the accuracy/gap figure's title says there is no interval (not
    "95% interval"), its legend names settings in words ("no augmentation, no LR scaling"), and a setting
    has the same colour there as in the learning curves."""
    flags = chromium_flags(tmp_path)
    store, _ = write_study(tmp_path)
    dom = rendered_dom(flags, write_report(store.root))
    accuracy = section(dom, "accuracy_gap_vs_batch")
    title = re.search(r'class="gtitle"[^>]*>(.*?)</text>', accuracy, re.S).group(1)
    assert "one seed: no interval" in title and "95%" not in title, title
    colours = legend_colours(accuracy)
    assert "no augmentation, no LR scaling" in colours, colours
    assert not any("lr none" in label or label.startswith("none,") for label in colours), colours
    curves = legend_colours(section(dom, "learning_curves"))  # "<setting> (train)" / "(test)": one per meaning
    assert len(curves) == 2 * len(colours), curves
    assert all(curves[f"{label} ({split})"] == c for label, c in colours.items() for split in ("train", "test"))
