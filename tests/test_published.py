"""The published numbers file holds every cell of the paper's Tables 1-5, as the paper prints them."""

import math

import pytest

from blf.nn.heads import blf_extremum
from blf.report import labels, published


def test_every_cell_of_tables_1_to_5_is_there():
    df = published.load()
    cells = df[df["table"] != "theorem3"].groupby("table").size().to_dict()
    # rows x columns of each table: 8 x 5, 8 x 5, 2 x 6, 16 x 5, 2 x 5
    assert cells == {"1": 40, "2": 40, "3": 12, "4": 80, "5": 10}
    # N/A: TRADES under standard training (it is adversarial training)
    missing = df[df["value"].isna()]
    assert len(missing) == 18 and set(missing["method"]) == {"TRADES"} and set(missing["setting"]) == {"ST"}
    assert set(df["method"]) <= set(labels.METHOD_ORDER)
    assert set(df["model"].dropna()) == {"2c2f", "4c3f", "resnet18", "wrn34_10"}


@pytest.mark.parametrize("table, where, value", [
    (1, {"model": "4c3f", "setting": "ST", "method": "BLF"}, 82.4),
    (1, {"model": "wrn34_10", "setting": "ST", "method": "LSQ"}, 42.1),
    (2, {"model": "resnet18", "setting": "ST", "method": "BLF"}, 31.7),
    (3, {"setting": "AT", "method": "BLF"}, 4.4),
    (3, {"setting": "ST", "method": "L-BLF"}, 20.1),
    (4, {"model": "2c2f", "setting": "ST", "method": "LSM", "attack": "apgd_t"}, 61.7),
    (4, {"model": "wrn34_10", "setting": "AT", "method": "TRADES", "attack": "apgd_ce"}, 55.9),
    (5, {"setting": "AT", "method": "BLF"}, 0.0068),
])
def test_values_as_the_paper_prints_them(table, where, value):
    df = published.table(table)
    for key, wanted in where.items():
        df = df[df[key] == wanted]
    assert df["value"].tolist() == [pytest.approx(value)]


def test_budgets_are_the_tables_and_theorem_3_bounds_our_extremum():
    df = published.load()
    attacked = df[df["attack"].notna()]
    assert set(zip(attacked["dataset"], attacked["eps"].round(8))) == {("mnist", 0.15), ("cifar10", round(8 / 255, 8))}
    bounds = published.table("theorem3").set_index("metric")["value"]
    z_star, g_star = blf_extremum()
    assert bounds["z_star_lower"] < z_star < bounds["z_star_upper"] == pytest.approx(math.sqrt(5) + 1)
    assert bounds["g_star_lower"] < g_star < bounds["g_star_upper"] == pytest.approx((math.sqrt(5) + 1) / 2)
