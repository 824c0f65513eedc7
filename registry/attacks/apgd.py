"""Auto-PGD on its own (Croce & Hein, Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks, ICML 2020)."""

from harness import register_attack
from harness.attacks.apgd import APGD

register_attack("apgd", paper="Croce & Hein, ICML 2020")(APGD)
