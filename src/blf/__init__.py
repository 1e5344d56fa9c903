"""Bounded Logit Function (BLF) for adversarial robustness.

A reference implementation of Kanai et al., "Constraining Logits by Bounded Function for
Adversarial Robustness": the BLF head and its rivals (logit squeezing, label smoothing, tanh,
TRADES), standard and adversarial training, and the paper's robustness evaluation.
"""
