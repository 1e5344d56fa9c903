"""CITATION.cff describes this implementation and cites the paper as the paper names itself;
LICENSE and pyproject.toml agree with it."""

import datetime
import re
import tomllib

import yaml

from conftest import REPO


def citation() -> dict:
    return yaml.safe_load((REPO / "CITATION.cff").read_text())


def readme_title() -> str:
    """The title of the README's BibTeX entry for the paper."""
    return re.search(r"title\s*=\s*\{(.+?)\}", (REPO / "README.md").read_text())[1]


def test_citation_cff_has_the_required_keys_and_agrees_with_the_project():
    cff = citation()
    assert cff["cff-version"] == "1.2.0" and cff["message"].strip()
    assert cff["title"].startswith("blf: ") and cff["authors"] == [{"name": "The blf authors"}]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert cff["version"] == project["version"] == "0.1.0"
    assert cff["license"] == project["license"] == "MIT"
    assert cff["date-released"] == datetime.date(2026, 11, 26)
    license_text = (REPO / "LICENSE").read_text()
    assert license_text.startswith("MIT License\n") and "Copyright (c) 2026 The blf authors" in license_text
    assert "[CITATION.cff](CITATION.cff)" in (REPO / "README.md").read_text()


def test_the_preferred_citation_is_the_paper():
    paper = citation()["preferred-citation"]
    assert paper["type"] == "article" and paper["year"] == 2020
    assert paper["title"] == readme_title() == "Constraining Logits by Bounded Function for Adversarial Robustness"
    names = [f"{a['given-names']} {a['family-names']}" for a in paper["authors"]]
    assert names == ["Sekitoshi Kanai", "Masanori Yamada", "Shin'ya Yamaguchi", "Hiroshi Takahashi", "Yasutoshi Ida"]

