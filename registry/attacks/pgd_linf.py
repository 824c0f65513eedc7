"""Projected Gradient Descent under Linf (Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018)."""

from harness import register_attack
from harness.attacks.pgd import PGDLinf

register_attack("pgd_linf", paper="Madry et al., ICLR 2018")(PGDLinf)
