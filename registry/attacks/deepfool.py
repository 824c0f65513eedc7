"""DeepFool (Moosavi-Dezfooli et al., DeepFool: a simple and accurate method to fool deep neural networks, CVPR 2016)."""

from harness import register_attack
from harness.attacks.deepfool import DeepFool

register_attack("deepfool", paper="Moosavi-Dezfooli et al., CVPR 2016")(DeepFool)
