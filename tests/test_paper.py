"""densenet_lit.paper: every number is cited, and the numbers are those of their sources."""

from __future__ import annotations

import pytest

from densenet_lit.paper import (
    ALL_MODELS,
    IMAGENET_RESNETS,
    PREACT_RESNETS,
    SOURCES,
    citation,
    imagenet_key,
    paper_model,
)

ROWS = [*ALL_MODELS, *IMAGENET_RESNETS, *PREACT_RESNETS]


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.key)
def test_every_number_names_where_it_was_read(row):
    numbers = [*row.errors] + (["params"] if row.params_m is not None else [])
    assert numbers
    for what in numbers:
        where, source = row.cited[what]
        assert where and source in SOURCES, (row.key, what)
        assert citation(row, what) == f"{where}; {SOURCES[source]}"
    assert set(row.cited) == set(numbers), "a citation of a number that is not there"


def test_table3_single_and_ten_crop_errors():
    """CVPR Table 3 as printed: top-1 and top-5, single-crop / 10-crop."""
    table3 = {
        "densenet121": (25.02, 7.71, 23.61, 6.66),
        "densenet169": (23.80, 6.85, 22.08, 5.92),
        "densenet201": (22.58, 6.34, 21.46, 5.54),
        "densenet264": (22.15, 6.12, 20.80, 5.29),
    }
    columns = [imagenet_key(c, top5) for c in (1, 10) for top5 in (False, True)]
    assert columns == ["imagenet", "imagenet_top5", "imagenet_10crop", "imagenet_10crop_top5"]
    for key, values in table3.items():
        row = paper_model(key)
        assert tuple(row.errors[c] for c in columns) == values
        assert {row.cited[c] for c in columns} == {("Table 3", "cvpr")}


def test_readme_only_rows_lack_the_ten_crop_and_top5_columns():
    for key, top1 in (("densenet161", 22.2), ("densenet264_cosine", 21.6)):
        row = paper_model(key)
        assert row.errors == {"imagenet": top1, "imagenet_readme": top1}
        assert row.cited["imagenet"][1] == "readme"
    assert paper_model("densenet121").errors["imagenet_readme"] == 25.0


def test_baselines_as_their_sources_print_them():
    resnets = {r.key: (r.errors["imagenet"], r.errors["imagenet_10crop"]) for r in IMAGENET_RESNETS}
    assert resnets == {
        "resnet34": (26.73, 24.76),
        "resnet50": (24.01, 22.24),
        "resnet101": (22.44, 21.08),
        "resnet152": (22.16, 20.69),
    }
    preact = {r.key: (r.params_m, r.errors["c10+"], r.errors["c100+"]) for r in PREACT_RESNETS}
    assert preact == {
        "preact_resnet164": (1.7, 5.46, 24.33),
        "preact_resnet1001": (10.2, 4.62, 22.71),
    }


def test_bad_lookups_say_what_exists():
    with pytest.raises(ValueError, match="crops=5"):
        imagenet_key(5)
    with pytest.raises(KeyError, match="densenet161 has no cited number for 'imagenet_10crop'"):
        citation(paper_model("densenet161"), "imagenet_10crop")
