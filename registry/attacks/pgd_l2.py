"""Projected Gradient Descent under L2 (Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018)."""

from harness import register_attack
from harness.attacks.pgd import PGDL2

register_attack("pgd_l2", paper="Madry et al., ICLR 2018")(PGDL2)
