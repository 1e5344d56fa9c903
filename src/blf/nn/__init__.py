"""The networks: heads on the pre-logits (BLF and its rivals), the classifiers they sit on,
the logit regularizers, and the precision they compute in."""
