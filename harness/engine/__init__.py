"""The engine: grid files into jobs, and one job's stages (train, prune, fine-tune, measure, attack) with caching."""
