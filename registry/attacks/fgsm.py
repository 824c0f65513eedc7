"""Fast Gradient Sign Method (Goodfellow et al., Explaining and Harnessing Adversarial Examples, ICLR 2015)."""

from harness import register_attack
from harness.attacks.fgsm import FGSM

register_attack("fgsm", paper="Goodfellow et al., ICLR 2015")(FGSM)
