"""What to run: study files, the sweep plan, Ray Tune orchestration and the results store."""
