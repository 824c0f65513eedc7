"""Square Attack, a query-only random search (Andriushchenko et al., Square Attack, ECCV 2020)."""

from harness import register_attack
from harness.attacks.square import Square

register_attack("square", paper="Andriushchenko et al., ECCV 2020")(Square)
