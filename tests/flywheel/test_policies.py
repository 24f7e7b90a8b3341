"""The data policies pick the right records; recipe fields are validated with clear errors."""

import pytest
import yaml

from distill.flywheel.real import draw_real
from distill.recipe import RecipeError, load_recipe
from distill.records import Example
from distill.registry import POLICIES, REAL_SOURCES


def records(prefix, n):
    return [Example(id=f"{prefix}-{i}", instruction=f"{prefix} {i}") for i in range(n)]


SYNTHETIC = [records("s0", 10), records("s1", 10), records("s2", 10)]
REAL = records("real", 20)


def select(kind, round_index, synthetic, real, *, seed, real_first=False, shuffle=True,
           **settings):
    """Round `round_index`'s training set as the runner builds it: the policy names the
    rounds of synthetic data and real draws it trains on (`sources`), and `select` gets
    exactly those."""
    policy = POLICIES.get(kind)(**settings)
    wanted = policy.sources(round_index, real_first=real_first)
    return policy.select(round_index, {r: synthetic[r] for r in wanted.synthetic},
                         [real[r] for r in wanted.real], seed=seed, shuffle=shuffle)


def sources(selection):
    return {r.id.split("-")[0] for r in selection.records}


def test_replace_trains_on_the_newest_synthetic_data_only():
    selection = select("replace", 2, SYNTHETIC, [REAL] * 3, seed=0)
    assert sorted(r.id for r in selection.records) == sorted(r.id for r in SYNTHETIC[2])
    assert selection.counts == {"round_2": 10}


def test_accumulate_keeps_real_and_every_round_once():
    selection = select("accumulate", 2, SYNTHETIC, [REAL] * 3, seed=0)
    assert len(selection.records) == 20 + 30  # the same real draw each round counts once
    assert selection.counts == {"real": 20, "round_0": 10, "round_1": 10, "round_2": 10}
    fresh = [records(f"real{r}", 5) for r in range(3)]
    selection = select("accumulate", 2, SYNTHETIC, fresh, seed=0)
    assert selection.counts["real"] == 15


def test_accumulate_subsample_has_a_fixed_budget_and_is_seeded():
    one = select("accumulate_subsample", 2, SYNTHETIC, [REAL] * 3, seed=0, budget=12)
    two = select("accumulate_subsample", 2, SYNTHETIC, [REAL] * 3, seed=0, budget=12)
    other = select("accumulate_subsample", 2, SYNTHETIC, [REAL] * 3, seed=1, budget=12)
    assert len(one.records) == 12 and sum(one.counts.values()) == 12
    assert [r.id for r in one.records] == [r.id for r in two.records]
    assert [r.id for r in one.records] != [r.id for r in other.records]
    assert len({r.id for r in one.records}) == 12  # without replacement


def test_mix_keeps_the_synthetic_size_with_a_real_fraction():
    selection = select("mix", 1, SYNTHETIC[:2], [REAL] * 2, seed=0, real_fraction=0.3)
    assert selection.counts == {"real": 3, "round_1": 7}
    assert sources(selection) == {"real", "s1"}
    with pytest.raises(ValueError, match="mix needs 30 real records"):
        select("mix", 0, [records("s0", 100)], [REAL], seed=0, real_fraction=0.3)


def test_shuffle_false_keeps_the_written_order():
    selection = select("accumulate", 1, SYNTHETIC[:2], [REAL[:2]] * 2, seed=0, shuffle=False)
    assert [r.id for r in selection.records][:4] == ["real-0", "real-1", "s0-0", "s0-1"]


def test_microworld_real_draws_are_seeded_fresh_and_disjoint_from_held_out():
    source = REAL_SOURCES.get("microworld")(count=30, held_out=20)
    first = draw_real(source, seed=0, round_index=0)
    same = draw_real(source, seed=0, round_index=3)  # not fresh: round 0's sample again
    fresh = draw_real(source, seed=0, round_index=3, fresh=True)
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
    source = REAL_SOURCES.get("path")(path=str(path), held_out=10, count=15)
    draw = draw_real(source, seed=0, round_index=0)
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
    ({"data_policy": "mix"}, {"real": {"kind": "microworld", "count": 5}},
     "rounds.data_policy.mix.real_fraction: Field required"),
    ({"data_policy": {"kind": "mix", "real_fraction": 0.1}}, {},
     "rounds.data_policy mix needs real data: set data.real"),
    ({"data_policy": "accumulate_subsample"}, {},
     "rounds.data_policy.accumulate_subsample.budget: Field required"),
    ({"data_policy": {"kind": "replace", "budget": 10}}, {},
     "rounds.data_policy.replace.budget: unknown key"),
    ({"data_policy": {"kind": "accumulate", "real_fraction": 0.1}}, {},
     "rounds.data_policy.accumulate.real_fraction: unknown key"),
    ({"data_policy": {"kind": "mix", "real_fraction": 1.5}}, {},
     "rounds.data_policy.mix.real_fraction: Input should be less than 1"),
    ({"fresh_real": True}, {}, "rounds.fresh_real needs real data: set data.real"),
    ({}, {"real": {}}, "data.real: needs a `kind`"),
    ({}, {"real": {"kind": "microworld", "count": 5, "held_out_path": "x.jsonl"}},
     "data.real.microworld.held_out_path: unknown key"),
    ({}, {"real": "x.jsonl"}, "data.real.path.path: file or directory not found: x.jsonl"),
    ({"data_policy": "sometimes"}, {},
     "rounds.data_policy: unknown kind 'sometimes'; choose one of 'accumulate'"),
])
def test_bad_policy_settings_are_named(tmp_path, rounds, data, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        load_recipe(write(tmp_path, {**BASE, "rounds": rounds, "data": data}))


def test_real_data_shorthand_becomes_a_path_source(tmp_path):
    (tmp_path / "real.jsonl").write_text('{"id": "a", "instruction": "q", "output": "a"}\n')
    recipe = load_recipe(write(tmp_path, {**BASE, "data": {"real": "real.jsonl"}}))
    assert recipe.data.real.path == str(tmp_path / "real.jsonl")
    assert recipe.data.real.held_out == 0


def test_every_policy_trains_round_0_on_the_same_batches():
    # real_first: round 0's data is the real data, so the arms of a study share a start
    orders = {policy: [r.id for r in select(policy, 0, SYNTHETIC[:1], [], seed=3,
                                            real_first=True).records]
              for policy in ("replace", "accumulate")}
    assert orders["replace"] == orders["accumulate"]
    assert orders["replace"] != [r.id for r in SYNTHETIC[0]]  # and it was shuffled
