"""What to run: the study file and the grid of trials, the Ray cluster, Ray Tune orchestration, measurements.

config.py (study file -> frozen dataclasses, validation), plan.py (the sweep -> one TrialSpec per grid
point), run_sweep.py (the CLI; Tune runs the trials, the driver prints progress), cluster.py and
lock.py (joining Ray, one driver per study), measure.py (sharpness and landscapes as Ray tasks over
checkpoints), bench*.py (benchmarks that print numbers).
"""
