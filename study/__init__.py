"""What to run: study files, the sweep plan, the Ray cluster, Ray Tune orchestration and the measurement phase."""
