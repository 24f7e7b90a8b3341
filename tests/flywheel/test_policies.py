"""The data policies pick the right records; recipe fields are validated with clear errors."""

import pytest
import yaml

from distill.flywheel.data import RealDataConfig, draw_real, select_training_data
from distill.recipe import RecipeError, load_recipe
from distill.records import Example


def records(prefix, n):
    return [Example(id=f"{prefix}-{i}", instruction=f"{prefix} {i}") for i in range(n)]


SYNTHETIC = [records("s0", 10), records("s1", 10), records("s2", 10)]
REAL = records("real", 20)


def sources(selection):
    return {r.id.split("-")[0] for r in selection.records}


def test_replace_trains_on_the_newest_synthetic_data_only():
    selection = select_training_data("replace", 2, SYNTHETIC, [REAL] * 3, seed=0)
    assert sorted(r.id for r in selection.records) == sorted(r.id for r in SYNTHETIC[2])
    assert selection.counts == {"round_2": 10}


def test_accumulate_keeps_real_and_every_round_once():
    selection = select_training_data("accumulate", 2, SYNTHETIC, [REAL] * 3, seed=0)
    assert len(selection.records) == 20 + 30  # the same real draw each round counts once
    assert selection.counts == {"real": 20, "round_0": 10, "round_1": 10, "round_2": 10}
    fresh = [records(f"real{r}", 5) for r in range(3)]
    selection = select_training_data("accumulate", 2, SYNTHETIC, fresh, seed=0)
    assert selection.counts["real"] == 15


def test_accumulate_subsample_has_a_fixed_budget_and_is_seeded():
    one = select_training_data("accumulate_subsample", 2, SYNTHETIC, [REAL] * 3, seed=0,
                               budget=12)
    two = select_training_data("accumulate_subsample", 2, SYNTHETIC, [REAL] * 3, seed=0,
                               budget=12)
    other = select_training_data("accumulate_subsample", 2, SYNTHETIC, [REAL] * 3, seed=1,
                                 budget=12)
    assert len(one.records) == 12 and sum(one.counts.values()) == 12
    assert [r.id for r in one.records] == [r.id for r in two.records]
    assert [r.id for r in one.records] != [r.id for r in other.records]
    assert len({r.id for r in one.records}) == 12  # without replacement


def test_mix_keeps_the_synthetic_size_with_a_real_fraction():
    selection = select_training_data("mix", 1, SYNTHETIC[:2], [REAL] * 2, seed=0,
                                     real_fraction=0.3)
    assert selection.counts == {"real": 3, "round_1": 7}
    assert sources(selection) == {"real", "s1"}
    with pytest.raises(ValueError, match="mix needs 30 real records"):
        select_training_data("mix", 0, [records("s0", 100)], [REAL], seed=0,
                             real_fraction=0.3)


def test_shuffle_false_keeps_the_written_order():
    selection = select_training_data("accumulate", 1, SYNTHETIC[:2], [REAL[:2]] * 2, seed=0,
                                     shuffle=False)
    assert [r.id for r in selection.records][:4] == ["real-0", "real-1", "s0-0", "s0-1"]


def test_microworld_real_draws_are_seeded_fresh_and_disjoint_from_held_out():
    config = RealDataConfig(microworld={"count": 30}, held_out=20)
    first = draw_real(config, seed=0, round_index=0)
    same = draw_real(config, seed=0, round_index=3)  # not fresh: round 0's sample again
    fresh = draw_real(config, seed=0, round_index=3, fresh=True)
    assert [e.id for e in first.train] == [e.id for e in same.train]
    assert [e.id for e in first.train] != [e.id for e in fresh.train]
    assert [e.id for e in first.held_out] == [e.id for e in fresh.held_out]
    held = {e.id for e in first.held_out}
    assert len(held) == 20 and not held & {e.id for e in first.train + fresh.train}
    assert first.train[0].family and first.identity != fresh.identity


def test_jsonl_real_draws(tmp_path):
    path = tmp_path / "real.jsonl"
    path.write_text("".join(f'{{"id": "r{i}", "instruction": "q{i}", "output": "a"}}\n'
                            for i in range(50)))
    config = RealDataConfig(path=str(path), held_out=10, count=15)
    draw = draw_real(config, seed=0, round_index=0)
    assert len(draw.held_out) == 10 and len(draw.train) == 15
    assert not {e.id for e in draw.held_out} & {e.id for e in draw.train}


def write(tmp_path, data):
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"name": "t", "teacher": {"model": "org/teacher"}, "student": {"model": "org/student"},
        "generate": {"kind": "self_instruct", "num_instructions": 10},
        "eval": {"tasks": ["microworld"]}}


@pytest.mark.parametrize("rounds, data, message", [
    ({"data_policy": "mix"}, {"real": {"microworld": {"count": 5}}},
     "rounds: data_policy mix needs real_fraction"),
    ({"data_policy": "mix", "real_fraction": 0.1}, {}, "needs real data: set data.real"),
    ({"data_policy": "accumulate_subsample"}, {}, "needs budget"),
    ({"data_policy": "replace", "budget": 10}, {}, "budget is for accumulate_subsample"),
    ({"data_policy": "accumulate", "real_fraction": 0.1}, {}, "real_fraction is for mix"),
    ({"data_policy": "mix", "real_fraction": 1.5}, {}, "rounds.real_fraction: Input should"),
    ({"fresh_real": True}, {}, "rounds.fresh_real needs real data"),
    ({}, {"real": {}}, "data.real: give exactly one source"),
    ({}, {"real": {"microworld": {"count": 5}, "count": 3}}, "count and held_out_path are for"),
    ({}, {"real_data": "x.jsonl"}, "data.real_data: file or directory not found"),
    ({"data_policy": "sometimes"}, {}, "rounds.data_policy: Input should be"),
])
def test_bad_policy_settings_are_named(tmp_path, rounds, data, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        load_recipe(write(tmp_path, {**BASE, "rounds": rounds, "data": data}))


def test_real_data_shorthand_becomes_a_path_source(tmp_path):
    (tmp_path / "real.jsonl").write_text('{"id": "a", "instruction": "q", "output": "a"}\n')
    recipe = load_recipe(write(tmp_path, {**BASE, "data": {"real_data": "real.jsonl"}}))
    assert recipe.data.real.path == str(tmp_path / "real.jsonl")
    assert recipe.data.real.held_out == 0


def test_every_policy_trains_round_0_on_the_same_batches():
    # real_first: round 0's data is the real data, so the arms of a study share a start
    orders = {policy: [r.id for r in select_training_data(policy, 0, SYNTHETIC[:1], [],
                                                          seed=3).records]
              for policy in ("replace", "accumulate")}
    assert orders["replace"] == orders["accumulate"]
    assert orders["replace"] != [r.id for r in SYNTHETIC[0]]  # and it was shuffled
