"""Submissions: checking a user's pruner file in an isolated process, recording it, running it."""
