"""How one trial trains and is measured: a pure torch core plus thin Ray adapters.

Nothing here imports `study` or `analysis`; only `trainables.ray_train` imports ray.
"""
