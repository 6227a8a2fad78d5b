"""Measurements as plug-ins: one module per measurement, each registering one `Measure` (base.py) that owns
its settings dataclass (the study file's `measure.<name>:` section), its checks, how it plans jobs over
trained trials, the runners that compute them (in Ray tasks, torch imported there) and how the report
names the values it writes. The study config, the planner, the driver (study/measure.py) and the README
check read `MEASURES`; nothing else lists them.

Adding a measurement: a module here that calls `register(Measure(...))`, and its test (a toy one is added
that way by tests/test_measure_plugin.py and tests/test_sweep_key.py).
"""

import importlib
import pkgutil

from study.measures.base import (
    DIRECTION_SEED,
    MEASURES,
    Cost,
    Job,
    Measure,
    ProgressBoard,
    Shown,
    TaskInputs,
    progress,
    register,
    run_job,
)

# Every module of this package but the shared ones is a measurement that registers itself on import: a new
# file here is all it takes (the study file's `measure:` keys then follow the modules' name order).
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in ("base", "common"):
        importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "MEASURES",
    "DIRECTION_SEED",
    "Cost",
    "Job",
    "Measure",
    "ProgressBoard",
    "Shown",
    "TaskInputs",
    "progress",
    "register",
    "run_job",
]
