"""AutoAttack (Croce & Hein, Reliable Evaluation of Adversarial Robustness with an Ensemble of Diverse Parameter-free Attacks, ICML 2020)."""

from harness import register_attack
from harness.attacks.autoattack import AutoAttack

register_attack("autoattack", paper="Croce & Hein, ICML 2020")(AutoAttack)
