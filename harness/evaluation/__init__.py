"""Evaluation: clean and adversarial accuracy per attack and eps, the worst case, sanity flags, measured cost."""
