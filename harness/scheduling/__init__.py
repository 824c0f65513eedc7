"""Scheduling: the job DAG, the driver, and the executors (inline, worker processes, Ray) that run its tasks."""
