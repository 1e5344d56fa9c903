"""Evaluation of a trained classifier: attacks, robust accuracy and its worst case, the
integrity checks, the analyses (operator norms, loss surfaces), and the assessment that
records them for one checkpoint."""
