"""Training: the epoch loop with its checkpoints (`trainer` keys) and the training objectives
(standard, PGD adversarial training, TRADES; the `training` group)."""
