"""LaTeX tables: booktabs rules, hyper-parameters and budgets in math mode, other text escaped."""

import pandas as pd

from blf.report import labels, renderers, tables


def frame():
    """PGD accuracy of three CIFAR-10 runs at eps = 0 and 4/255."""
    runs = [("a", "blf", 0.5, "pgd_at", "resnet18", 80.0), ("b", "tanh", 1.0, "standard", "resnet18", 70.0),
            ("c", "blf", 1.0, "standard", "wrn34_10", 60.0)]
    return pd.DataFrame([{"run_dir": run, "dataset": "cifar10", "model": model, "head": head, "gamma": gamma,
                          "regularizer": "none", "training": training, "seed": 0, "kind": "robustness", "attack": "pgd",
                          "eps": eps, "accuracy": accuracy - 10 * i}
                         for run, head, gamma, training, model, accuracy in runs for i, eps in enumerate([0.0, 4 / 255])])


def test_a_latex_table_has_booktabs_rules_math_headers_and_escaped_text():
    table = pd.DataFrame({"eps=8/255": ["50.0 ± 1.2", "a_b 5% & #1"], "gamma": ["1", "40.0 †"], "failed checks": ["", "$x"]},
                         index=["RN18, ST, BLF (gamma=0.5), pgd", "2C2F ST LSQ (lam=0.1)"])
    lines = tables.to_latex(table, "Table 2: 5% of 10_000").splitlines()
    assert lines[:4] == ["% Table 2: 5% of 10_000", r"\begin{tabular}{lccc}", r"\toprule",
                         r" & $\varepsilon = 8/255$ & $\gamma$ & failed checks \\"]
    assert lines[4] == r"\midrule" and lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert lines[5] == r"RN18, ST, BLF ($\gamma = 0.5$), pgd & 50.0 $\pm$ 1.2 & 1 &  \\"
    assert lines[6] == r"2C2F ST LSQ ($\lambda = 0.1$) & a\_b 5\% \& \#1 & 40.0 $^\dagger$ & \$x \\"


def test_symbols_become_math_only_as_names_with_values_or_as_headers():
    assert tables.latex_text("eps", header=True) == r"$\varepsilon$"
    assert tables.latex_text("eps") == "eps"  # a word in a cell stays a word
    assert tables.latex_text("LSM (alpha=0.2)+TRADES (beta=6)") == r"LSM ($\alpha = 0.2$)+TRADES ($\beta = 6$)"
    assert tables.latex_text("lambda=1e-05, alphabet=3") == r"$\lambda = 1e-05$, alphabet=3"
    assert tables.latex_text("pgd_convergence {~^\\}") == r"pgd\_convergence \{\textasciitilde{}\textasciicircum{}\textbackslash{}\}"
    assert set(labels.LATEX_SYMBOLS) >= {"eps", "gamma", "lam", "alpha", "beta"}


def test_the_written_curve_table_is_booktabs_latex_and_plain_markdown(tmp_path):
    final = labels.annotate(frame())
    written = renderers.write_table(tables.curve_table(final, ["model", "setting"]), tmp_path / "fig4", "Fig. 4_a",
                                    notes=["100% of runs"])
    tex, markdown = (tmp_path / "fig4.tex").read_text(), (tmp_path / "fig4.md").read_text()
    assert [p.name for p in written] == ["fig4.md", "fig4.tex"]
    assert [line for line in tex.splitlines() if line.endswith("rule")] == [r"\toprule", r"\midrule", r"\bottomrule"]
    assert r" & $\varepsilon = 0/255$ & $\varepsilon = 4/255$ \\" in tex
    assert r"RN18, AT, BLF ($\gamma = 0.5$), pgd & 80.0 & 70.0 \\" in tex
    assert tex.startswith("% Fig. 4_a\n") and tex.endswith("% 100% of runs\n")  # comments: nothing to escape
    assert "|  | eps=0/255 | eps=4/255 |" in markdown and "BLF (gamma=0.5)" in markdown  # Markdown stays plain text
