"""The contracts: what a plugin author and every other part of the harness rely on, and nothing else."""
