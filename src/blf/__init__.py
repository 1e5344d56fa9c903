"""Bounded Logit Function (BLF) for adversarial robustness.

A reference implementation of Kanai et al., "Constraining Logits by Bounded Function for
Adversarial Robustness": the BLF head and its rivals (logit squeezing, label smoothing, tanh,
TRADES), standard and adversarial training, and the paper's robustness evaluation.

As a library:

    from blf import BLF, with_head, load
    model = with_head(my_classifier, BLF(gamma=1.0))   # softmax(gamma * g(z)), z = my_classifier(x)
    trained = load("multirun/demo/paper/<run>")       # a trained run: images in [0, 1] -> logits
    card = audit(trained, x, y, eps=[0.1, 0.3])        # any classifier, audited (blf.audit)

`audit` is the function; its module is `blf.audit` in `sys.modules` (`from blf.audit import Audit`
and `python -m blf.audit` reach it).
"""

# Last: it shadows the subpackage blf.audit by its function (the name users call).
from blf.audit import Audit, audit  # noqa: E402
from blf.nn.heads import BLF, BoundedHead, Head, Identity, LearnableBLF, Sigmoid, Tanh, blf, blf_extremum
from blf.nn.models import Classifier, with_head
from blf.trained import load

__all__ = [
    "Audit",
    "BLF",
    "BoundedHead",
    "Classifier",
    "Head",
    "Identity",
    "LearnableBLF",
    "Sigmoid",
    "Tanh",
    "audit",
    "blf",
    "blf_extremum",
    "load",
    "with_head",
]
