"""Training and fine-tuning: the SGD loop, its augmentation, and the adversarial-training regimes."""
