"""Figures drawn from hand-made records: they read the frame the aggregation writes (every
record kind in one frame), lay panels out in the paper's order, draw into the caller's axes
when given them, and return the Figure; writing files is `save`'s."""

import matplotlib.pyplot as plt
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

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


def surfaces(k=2):
    return torch.linspace(-4 / 255, 4 / 255, 3), torch.arange(k * 9, dtype=torch.float32).reshape(k, 3, 3)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_norms_vs_accuracy_pairs_each_runs_norms_with_its_pgd_accuracy():
    fig = figures.norms_vs_accuracy(frame(), 4 / 255, title="t")
    top = fig.axes[0]
    points = {tuple(p) for c in top.collections for p in c.get_offsets()}
    assert (1.5, 70.0) in points and (3.0, 60.0) in points and (9.0, 60.0) in points  # logits of a, b; pre-logits


def test_every_run_gets_its_worst_case_as_one_dotted_line_and_only_the_papers_attacks_are_drawn():
    df = frame()
    square = df[(df["run_dir"] == "a") & (df["kind"] == "robustness")].assign(attack="square", accuracy=[79.0, 65.0])
    worst = [{**square.iloc[0].to_dict(), "kind": "worst_case", "attack": "worst_case", "eps": eps, "accuracy": acc,
              "attacks": "pgd+square"} for eps, acc in ((0.0, 79.0), (4 / 255, 60.0))]
    worst[0]["attacks"] = "pgd"  # another set of attacks at eps 0: still one line
    lone = {**df[df["run_dir"] == "b"].iloc[1].to_dict(), "kind": "worst_case", "attack": "worst_case", "attacks": "pgd"}
    adaptive = square.assign(attack="bpda_envelope", accuracy=[79.0, 61.0])  # in the worst case, not a line of its own
    df = pd.concat([df, square, adaptive, pd.DataFrame([*worst, lone])], ignore_index=True)
    ax = figures.accuracy_panels(df, []).axes[0]
    lines = {bars.get_label(): bars.lines[0] for bars in ax.containers}  # errorbar: the data line first
    dotted = [name for name, line in lines.items() if line.get_linestyle() == ":"]
    # Run b had one attack: its worst case is that attack's, and it is drawn all the same.
    every = "worst case (every attack at each eps)"
    assert dotted == [f"BLF ($\\gamma$=0.5), {every}", f"tanh ($\\gamma$=1), {every}"]
    assert not any("bpda_envelope" in name for name in lines)
    assert list(lines[dotted[0]].get_ydata()) == [79.0, 60.0]
    # A method keeps its colour across its attacks; methods differ in colour, attacks in style.
    blf = [lines[f"BLF ($\\gamma$=0.5), {attack}"] for attack in ("pgd", "square", every)]
    assert len({line.get_color() for line in blf}) == 1 and len({line.get_linestyle() for line in blf}) == 3
    assert lines["tanh ($\\gamma$=1), pgd"].get_color() != blf[0].get_color()


def test_panels_are_written_as_png_and_pdf(tmp_path):
    fig = figures.accuracy_panels(frame(), ["model", "setting"], title="t")
    written = figures.save(fig, tmp_path / "fig4")
    assert [p.suffix for p in written] == [".png", ".pdf"] and all(p.is_file() and p.stat().st_size for p in written)
    assert plt.fignum_exists(fig.number)  # saving leaves the figure to its owner ...
    figures.save(fig, tmp_path / "again", close=True)
    assert not plt.fignum_exists(fig.number)  # ... unless asked to release it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.pdf", "again.png", "fig4.pdf", "fig4.png"]  # no temporaries


def test_panel_titles_in_the_papers_order():
    fig = figures.accuracy_panels(frame(), ["model", "setting"], title="t")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["RN18, ST", "RN18, AT", "WRN, ST"]


def test_without_axes_each_function_draws_a_new_figure():
    axis, values = surfaces()
    drawn = [figures.blf_vs_tanh(), figures.accuracy_panels(frame(), []), figures.norms_vs_accuracy(frame(), 4 / 255),
             figures.loss_surfaces(axis, values)]
    assert all(isinstance(fig, Figure) for fig in drawn)
    assert len({id(fig) for fig in drawn}) == 4 and plt.get_fignums() == [fig.number for fig in drawn]


def test_blf_vs_tanh_draws_into_the_callers_axes():
    fig, (left, right) = plt.subplots(1, 2)
    assert figures.blf_vs_tanh(ax=right) is fig and plt.get_fignums() == [fig.number]
    assert not left.lines and len(right.lines) >= 4  # BLF, tanh, the two extrema
    assert right.get_title().startswith("Fig. 2")


def test_accuracy_panels_draw_into_the_callers_axes_in_the_papers_order():
    fig, axes = plt.subplots(2, 2)
    assert figures.accuracy_panels(frame(), ["model", "setting"], axes=axes) is fig and plt.get_fignums() == [fig.number]
    assert [ax.get_title() for ax in axes.flat[:3]] == ["RN18, ST", "RN18, AT", "WRN, ST"]
    assert all(ax.containers for ax in axes.flat[:3])  # one error-bar line per method
    assert not axes.flat[3].axison and not axes.flat[3].containers  # the spare axes is switched off
    assert fig.get_suptitle() == ""  # the caller's figure keeps the caller's title

    one = plt.subplots()[1]
    assert figures.accuracy_panels(frame(), [], axes=one, title="mine") is one.figure
    assert one.containers and one.figure.get_suptitle() == "mine"
    with pytest.raises(ValueError, match="cannot hold 3 panels .*allowed: 3 or more matplotlib Axes"):
        figures.accuracy_panels(frame(), ["model", "setting"], axes=plt.subplots(1, 2)[1])


def test_norms_vs_accuracy_draws_into_the_callers_axes():
    fig, (l2, linf) = plt.subplots(1, 2)
    assert figures.norms_vs_accuracy(frame(), 4 / 255, axes=(l2, linf)) is fig
    assert {tuple(p) for c in l2.collections for p in c.get_offsets()} >= {(1.5, 70.0), (9.0, 60.0)}
    assert {tuple(p) for c in linf.collections for p in c.get_offsets()} >= {(1.0, 60.0), (4.0, 60.0)}


def test_loss_surfaces_draw_into_the_callers_3d_axes_of_a_subfigure():
    axis, values = surfaces()
    fig = plt.figure()
    left, right = fig.subfigures(1, 2)
    axes = [right.add_subplot(1, 2, i + 1, projection="3d") for i in range(2)]
    assert figures.loss_surfaces(axis, values, axes=axes) is fig  # the Figure, not the subfigure
    assert all(ax.collections for ax in axes) and not left.axes
    with pytest.raises(ValueError, match=r"projection \['rectilinear'\].*allowed: axes made with projection='3d'"):
        figures.loss_surfaces(axis, values, axes=plt.subplots(1, 2)[1])


def test_fig2_command_writes_png_and_pdf(tmp_path, capsys):
    assert figures.main(["fig2", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig2.pdf", "fig2.png"] and not plt.get_fignums()


def test_budget_sweep_draws_steps_and_restarts_per_run_and_nothing_without_a_sweep():
    base = {"run_dir": "a", "dataset": "mnist", "model": "2c2f", "head": "blf", "gamma": 1.0, "regularizer": "none",
            "lam": None, "alpha": None, "training": "standard", "beta": None, "seed": 0, "kind": "budget_sweep",
            "attack": "pgd", "eps": 0.15, "attack.restart_steps": 40, "sweep_n": 200}
    budgets = [(10, 1, 60.0), (40, 1, 50.0), (1000, 1, 20.0), (40, 5, 40.0), (40, 20, 30.0)]
    df = pd.DataFrame([{**base, "attack.nb_iter": s, "attack.restarts": r, "accuracy": a} for s, r, a in budgets])
    fig = figures.budget_sweep(df)
    steps, restarts = fig.axes
    assert list(steps.lines[0].get_xdata()) == [10, 40, 1000] and list(steps.lines[0].get_ydata()) == [60.0, 50.0, 20.0]
    assert list(restarts.lines[0].get_xdata()) == [1, 5, 20] and list(restarts.lines[0].get_ydata()) == [50.0, 40.0, 30.0]
    assert figures.budget_sweep(frame()) is None


def test_budget_sweep_draws_one_line_per_setting_the_mean_over_its_seeds():
    base = {"dataset": "mnist", "model": "2c2f", "head": "identity", "gamma": None, "regularizer": "none", "lam": None,
            "alpha": None, "training": "standard", "beta": None, "kind": "budget_sweep", "attack": "pgd", "eps": 0.15,
            "attack.restart_steps": 40, "sweep_n": 200}
    budgets = [(10, 1, [60.0, 50.0]), (40, 1, [40.0, 30.0]), (40, 5, [30.0, 26.0])]
    df = pd.DataFrame([{**base, "run_dir": f"seed{seed}", "seed": seed, "attack.nb_iter": s, "attack.restarts": r,
                        "accuracy": a[seed]} for s, r, a in budgets for seed in (0, 1)])
    steps, restarts = figures.budget_sweep(df).axes
    data = [line for line in steps.lines if line.get_marker() == "o"]  # not the error bars' caps
    assert len(data) == 1 and list(data[0].get_ydata()) == [55.0, 35.0]
    assert [t.get_text() for t in restarts.get_legend().get_texts()] == ["Baseline, 2 seeds"]
    plt.close("all")
