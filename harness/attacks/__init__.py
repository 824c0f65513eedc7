"""Attack algorithms, one module each; `registry/attacks/` registers them as plugins."""
