"""Figures drawn from hand-made records: they read the frame the aggregation writes (every
record kind in one frame) and lay panels out in the paper's order."""

import matplotlib.pyplot as plt
import pandas as pd

from blf.report import figures


def records(run_dir, head, gamma, training, model, accuracy):
    base = {"run_dir": run_dir, "dataset": "cifar10", "model": model, "head": head, "gamma": gamma,
            "regularizer": "none", "lam": None, "alpha": None, "training": training, "beta": None, "seed": 0}
    norms = {**base, "kind": "norms", "logit_l2": 3.0 * gamma, "logit_linf": gamma, "prelogit_l2": 9.0,
             "prelogit_linf": 4.0, "accuracy": None}
    robust = [{**base, "kind": "robustness", "attack": "pgd", "eps": eps, "accuracy": accuracy - 10 * i}
              for i, eps in enumerate([0.0, 4 / 255])]
    return [norms, *robust]


def frame():
    return pd.DataFrame(records("a", "blf", 0.5, "pgd_at", "resnet18", 80.0) + records("b", "tanh", 1.0, "standard", "resnet18", 70.0)
                        + records("c", "blf", 1.0, "standard", "wrn34_10", 60.0))


def test_norms_vs_accuracy_pairs_each_runs_norms_with_its_pgd_accuracy(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.setdefault("fig", fig) and [path])
    figures.norms_vs_accuracy(frame(), tmp_path / "fig1", eps=4 / 255, title="t")
    top = drawn["fig"].axes[0]
    points = {tuple(p) for c in top.collections for p in c.get_offsets()}
    assert (1.5, 70.0) in points and (3.0, 60.0) in points and (9.0, 60.0) in points  # logits of a, b; pre-logits
    plt.close(drawn["fig"])


def test_panels_are_written_as_png_and_pdf(tmp_path):
    written = figures.accuracy_panels(frame(), ["model", "setting"], tmp_path / "fig4", title="t")
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.is_file() for p in written)


def test_panel_titles_in_the_papers_order(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(figures, "save", lambda fig, path: drawn.setdefault("fig", fig) and [path])
    figures.accuracy_panels(frame(), ["model", "setting"], tmp_path / "fig4", title="t")
    titles = [ax.get_title() for ax in drawn["fig"].axes if ax.get_title()]
    assert titles == ["RN18, ST", "RN18, AT", "WRN, ST"]
    plt.close(drawn["fig"])
