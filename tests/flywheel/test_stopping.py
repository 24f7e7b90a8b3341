import pytest

from distill.flywheel.stopping import (
    CeilingRule,
    FloorRule,
    PlateauRule,
    check_stop,
    flatten_metrics,
)


def test_flatten_metrics():
    flat = flatten_metrics({"round": 2, "diversity": {"distinct_2": 0.5, "n": 10},
                            "benchmark": {"microworld/exact_match": 0.1},
                            "microworld": {"tail_families": ["a"], "ok": True}})
    assert flat == {"round": 2.0, "diversity.distinct_2": 0.5, "diversity.n": 10.0,
                    "benchmark.microworld/exact_match": 0.1}


def rows(metric, values):
    return [{metric: v} for v in values]


def test_plateau_waits_for_patience_rounds_without_improvement():
    rule = PlateauRule(metric="score", mode="max", min_delta=0.01, patience=2)
    assert check_stop([rule], rows("score", [0.1, 0.2])) is None
    assert check_stop([rule], rows("score", [0.1, 0.2, 0.205])) is None  # one stale round
    stop = check_stop([rule], rows("score", [0.1, 0.2, 0.205, 0.19]))
    assert stop["round"] == 3 and "best 0.2 at round 1" in stop["reason"]
    # an improvement by more than min_delta resets the count
    assert check_stop([rule], rows("score", [0.1, 0.2, 0.205, 0.25])) is None


def test_plateau_in_min_mode():
    rule = PlateauRule(metric="ppl", mode="min", patience=1)
    assert check_stop([rule], rows("ppl", [30, 25])) is None
    assert check_stop([rule], rows("ppl", [30, 25, 26]))["round"] == 2


def test_floor_and_ceiling():
    floor = FloorRule(metric="d2", value=0.3)
    assert check_stop([floor], rows("d2", [0.5, 0.31])) is None
    stop = check_stop([floor], rows("d2", [0.5, 0.29]))
    assert stop["reason"] == "d2 = 0.29 fell below the floor 0.3"
    ceiling = CeilingRule(metric="bleu", value=0.8)
    assert check_stop([ceiling], rows("bleu", [0.5, 0.81]))["rule"]["kind"] == "ceiling"


def test_first_rule_that_fires_wins_and_unknown_metric_is_named():
    rules = [FloorRule(metric="a", value=0.0), CeilingRule(metric="b", value=1.0)]
    assert check_stop(rules, [{"a": 1.0, "b": 2.0}])["metric"] == "b"
    with pytest.raises(KeyError, match="no metric 'c'"):
        check_stop([FloorRule(metric="c", value=0)], [{"a": 1.0}])
