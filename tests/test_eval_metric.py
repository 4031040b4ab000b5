"""LongTailedAccuracy against a hand-computed example, offline via evaluate.load and directly."""

from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest

from gh_hf.evaluation import METRIC_PATH, LongTailedAccuracy, class_groups, long_tailed_accuracy

# Sorted by count (ties by id): 0(500) 2(400) 1(300) | 3(300) 4(150) 5(120) | 6(100) 7(20) 8(19).
# The 300-300 tie between classes 1 and 3 straddles the Many/Medium cut: class 1 (lower id) is Many.
CLASS_COUNTS = [500, 300, 400, 300, 150, 120, 100, 20, 19]
# Per class (reference -> predictions): 0: 2/2, 1: 1/2, 2: 0/1, 3: 3/4, 4: 2/2, 5: 1/1, 6: 0/2,
# 7: absent from references, 8: 0/2 and never predicted.
REFERENCES = [0, 0, 1, 1, 2, 3, 3, 3, 3, 4, 4, 5, 6, 6, 8, 8]
PREDICTIONS = [0, 0, 1, 0, 7, 3, 3, 3, 1, 4, 4, 5, 0, 2, 6, 6]
PER_CLASS = [1.0, 0.5, 0.0, 0.75, 1.0, 1.0, 0.0, math.nan, 0.0]
# Population std of the 8 present classes: mean 4.25 / 8, sum of squared deviations 1.5546875.
STD = math.sqrt(1.5546875 / 8)
EXPECTED = {
    "thirds": {"accuracy": 9 / 16, "many": 0.5, "medium": 2.75 / 3, "few": 0.0, "per_class_std": STD},
    # Many > 100: 0..5; Medium 20..100: 6, 7 (7 absent); Few < 20: 8.
    "thresholds": {"accuracy": 9 / 16, "many": 4.25 / 6, "medium": 0.0, "few": 0.0, "per_class_std": STD},
}


def _assert_matches(result: dict, grouping: str) -> None:
    for key, value in EXPECTED[grouping].items():
        assert result[key] == pytest.approx(value, abs=1e-12), key
        assert type(result[key]) is float
    np.testing.assert_array_equal(result["per_class_accuracy"], PER_CLASS)  # NaN == NaN here


def test_class_groups_thirds_breaks_ties_by_class_id():
    groups = class_groups(CLASS_COUNTS, "thirds")
    assert groups == {"many": [0, 2, 1], "medium": [3, 4, 5], "few": [6, 7, 8]}


def test_class_groups_thresholds_boundaries():
    groups = class_groups([101, 100, 20, 19, 0], "thresholds")
    assert groups == {"many": [0], "medium": [1, 2], "few": [3, 4]}


@pytest.mark.parametrize("num_classes, sizes", [(10, (4, 3, 3)), (100, (34, 33, 33)), (2, (1, 1, 0))])
def test_class_groups_thirds_sizes_when_not_divisible(num_classes, sizes):
    groups = class_groups(list(range(num_classes, 0, -1)), "thirds")
    assert tuple(len(groups[name]) for name in ("many", "medium", "few")) == sizes
    assert sorted(sum(groups.values(), [])) == list(range(num_classes))


@pytest.mark.parametrize("grouping", ["thirds", "thresholds"])
def test_function_matches_hand_computed_example(grouping):
    _assert_matches(long_tailed_accuracy(PREDICTIONS, REFERENCES, CLASS_COUNTS, grouping), grouping)


def test_empty_group_is_nan():
    result = long_tailed_accuracy([0, 1], [0, 0], [500, 400], "thresholds")
    assert result["many"] == 0.5 and math.isnan(result["medium"]) and math.isnan(result["few"])
    assert math.isnan(result["per_class_accuracy"][1])


@pytest.mark.parametrize("grouping", ["thirds", "thresholds"])
def test_direct_metric_with_add_batch(grouping):
    metric = LongTailedAccuracy()
    for start in range(0, len(REFERENCES), 5):
        metric.add_batch(predictions=PREDICTIONS[start : start + 5], references=REFERENCES[start : start + 5])
    _assert_matches(metric.compute(class_counts=CLASS_COUNTS, grouping=grouping), grouping)


def test_evaluate_load_from_local_path_offline():
    metric = evaluate.load(METRIC_PATH)
    assert type(metric).__name__ == "LongTailedAccuracy"
    result = metric.compute(predictions=PREDICTIONS, references=REFERENCES, class_counts=CLASS_COUNTS)
    _assert_matches(result, "thirds")


def test_unknown_grouping_lists_allowed():
    with pytest.raises(ValueError, match=r"grouping.*'thirds', 'thresholds'.*'quartiles'"):
        long_tailed_accuracy([0], [0], [10], "quartiles")


@pytest.mark.parametrize(
    "predictions, references, field", [([0, 9], [0, 1], "predictions"), ([0, 1], [0, 9], "references")]
)
def test_label_outside_class_counts_raises(predictions, references, field):
    with pytest.raises(ValueError, match=rf"{field} must be class ids in \[0, 9\)"):
        LongTailedAccuracy().compute(
            predictions=predictions, references=references, class_counts=CLASS_COUNTS
        )


def test_missing_class_counts_raises():
    with pytest.raises(ValueError, match="class_counts"):
        LongTailedAccuracy().compute(predictions=[0], references=[0])


def test_display_names_shorten_run_folders_unless_they_collide():
    from gh_hf.evaluation.report import display_names

    assert display_names(["out/simclr_seed0/encoder", "out/gh_seed0/encoder", "user/model"]) == {
        "out/simclr_seed0/encoder": "simclr_seed0",
        "out/gh_seed0/encoder": "gh_seed0",
        "user/model": "user/model",
    }
    clash = ["a/run/encoder", "b/run/encoder"]
    assert display_names(clash) == {name: name for name in clash}
