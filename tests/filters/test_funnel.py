import json

from distill.filters.base import FilterContext, run_funnel
from distill.filters.dedup import Config as DedupConfig
from distill.filters.heuristics import Config as HeuristicsConfig
from distill.filters.novelty import Config as NoveltyConfig
from distill.records import Example, Lineage, Rejected


def ex(id, instruction, output="A fine answer.", **kwargs):
    return Example(id=id, instruction=instruction, output=output, **kwargs)


SEED = ex("seed-1", "Give three tips for staying healthy.")
RECORDS = [
    ex("1", "Explain why the sky is blue during the day."),
    ex("2", "Describe the image in one sentence."),                     # heuristics: blacklist
    ex("3", "Say hi."),                                                 # heuristics: too_short
    ex("4", "Summarize the story of Hamlet in two lines.", output=""),  # heuristics: empty
    ex("5", "List five uses of a paperclip at home.",
       lineage=Lineage(finish_reason="length")),                        # heuristics: truncated
    ex("6", "Give three tips for staying healthy and happy."),          # novelty vs the seed
    ex("7", "Explain why the sky is blue during the day!"),             # novelty vs record 1
    ex("8", "Translate 'good morning' into French, please."),
    ex("9", "Write a haiku about autumn leaves falling."),
    ex("10", "Write a haiku about autumn leaves, falling!"),            # novelty vs record 9
]


def funnel(**novelty):
    context = FilterContext(seed_tasks=lambda: [SEED])
    configs = [HeuristicsConfig(), NoveltyConfig(**novelty), DedupConfig()]
    filters = [config.build(context) for config in configs]
    seen = []
    result = run_funnel(filters, [r.model_copy(deep=True) for r in RECORDS],
                        progress=lambda name, n: seen.append((name, n)))
    return result, seen


def test_counts_reasons_and_examples():
    result, seen = funnel()
    heuristics, novelty, dedup = result.funnel
    assert [f["filter"] for f in result.funnel] == ["heuristics", "novelty", "dedup"]
    assert (heuristics["in"], heuristics["out"]) == (10, 6)
    assert heuristics["dropped"] == {"blacklist:image": 1, "too_short": 1, "empty_output": 1,
                                     "truncated_output": 1}
    assert heuristics["examples"]["too_short"] == [
        {"id": "3", "instruction": "Say hi.", "input": "", "output": "A fine answer."}]
    assert (novelty["in"], novelty["out"]) == (6, 3)
    assert novelty["dropped"] == {"rouge_l>0.7": 3}
    assert [e["id"] for e in novelty["examples"]["rouge_l>0.7"]] == ["6", "7", "10"]
    assert (dedup["in"], dedup["out"]) == (3, 3) and dedup["dropped"] == {}
    assert [r.id for r in result.kept] == ["1", "8", "9"]
    assert seen == [("heuristics", 6), ("novelty", 3), ("dedup", 3)]
    json.dumps(result.funnel)  # funnel.json is plain JSON


def test_rejected_records_keep_the_full_record_and_the_filter_scores():
    result, _ = funnel()
    rejected = {r.id: r for r in result.rejected}
    assert set(rejected) == {"2", "3", "4", "5", "6", "7", "10"}
    assert all(isinstance(r, Rejected) for r in result.rejected)
    truncated = rejected["5"]
    assert truncated.stage == "filter:heuristics" and truncated.reason == "truncated_output"
    assert truncated.record["lineage"]["finish_reason"] == "length"
    assert truncated.record["messages"][0]["content"] == RECORDS[4].instruction
    assert "novelty" not in truncated.record["scores"]  # never reached the novelty filter

    near = rejected["7"]
    assert near.stage == "filter:novelty" and near.reason == "rouge_l>0.7"
    scores = near.record["scores"]
    assert scores["heuristics"] == {"instruction_words": 9, "output_words": 3}
    assert scores["novelty"]["rouge_l_max"] == 1.0
    assert scores["novelty"]["most_similar_id"] == "1"
    assert rejected["6"].record["scores"]["novelty"]["most_similar_id"] == "seed-1"
    # Round trip: the rejected record reads back as the Example it was.
    again = Example.from_json(near.record)
    assert again.instruction == RECORDS[6].instruction and again.scores == scores


def test_kept_records_carry_every_filters_scores():
    result, _ = funnel()
    for record in result.kept:
        # dedup keeps without scores; novelty scores kept records only with score_kept
        assert set(record.scores) == {"heuristics"}
    result, _ = funnel(score_kept=True)
    for record in result.kept:
        assert set(record.scores) == {"heuristics", "novelty"}
        assert record.scores["novelty"]["rouge_l_max"] <= 0.7
    assert result.kept[0].scores["novelty"] == {"rouge_l_max": 0.0, "most_similar": None,
                                                "most_similar_id": None}


def test_records_dropped_early_never_enter_the_novelty_pool():
    # Record 5 was truncated; a later copy of it is judged against the pool without it.
    records = [r.model_copy(deep=True) for r in RECORDS]
    records.append(ex("11", "List five uses of a paperclip at home."))
    context = FilterContext(seed_tasks=lambda: [SEED])
    filters = [c.build(context) for c in (HeuristicsConfig(), NoveltyConfig())]
    result = run_funnel(filters, records)
    assert "11" in [r.id for r in result.kept]


def test_dedup_catches_what_novelty_lets_through_when_run_alone():
    records = [ex("a", "Name three fruits."), ex("b", "name three fruits!!"),
               ex("c", "Name three vegetables.")]
    dedup = DedupConfig().build(FilterContext())
    result = run_funnel([dedup], records)
    assert [r.id for r in result.kept] == ["a", "c"]
    assert result.rejected[0].record["scores"]["dedup"] == {"duplicate_of": "a"}
    assert result.funnel[0]["dropped"] == {"exact_duplicate": 1}
