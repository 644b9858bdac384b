"""Render farms: a run's parts, and the schedulers (Slurm, Kubernetes) behind one small
interface.  Imports ``run.plan``."""
