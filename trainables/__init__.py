"""How one trial trains and is measured: a pure torch core plus the one Ray adapter.

trial.py (the trial record: TrialSpec, EpochMetrics), models.py, data.py, augment.py / mixup.py, lr.py,
loop.py (the training loop), landscape.py and sharpness.py (measurements), checkpoint.py (a trial's
files). Nothing here imports `study` or `analysis` except ray_train.py, the Ray adapter, which runs the
loop inside Ray Train / Tune and writes the trial's rows through `analysis.store`; only it imports ray.
"""
