"""Prefect orchestration for granvae: the `retrain` flow, DVC data versioning, schedules.

Orchestration only: every number comes from granvae; this package moves paths and ids,
shells out to git/dvc (versioning.py is the only place), and picks the task runner.
Import `pipelines.flow` for the flow itself; this package root stays import-light.
"""
