"""Carlini & Wagner L2 attack (Carlini & Wagner, Towards Evaluating the Robustness of Neural Networks, IEEE S&P 2017)."""

from harness import register_attack
from harness.attacks.cw import CWL2

register_attack("cw_l2", paper="Carlini & Wagner, IEEE S&P 2017")(CWL2)
