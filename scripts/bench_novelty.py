"""Benchmark the ROUGE-L novelty filter against Alpaca's rouge_score loop.

Builds one seeded instruction stream with realistic near-duplicates (paraphrases with a
few words changed, clauses reordered, words added or dropped), replays it through

  (a) Alpaca's filter, as in stanford_alpaca's generate_instruction.py: for each candidate,
      a multiprocessing Pool of all cores maps `rouge_scorer._score_lcs` over every pool
      instruction's tokens; the candidate is dropped when the maximum F-measure is > 0.7;
  (b) distill's NoveltyFilter,

and prints both times, the speed ratio and the number of differing decisions (and of
differing maximum scores). Then it runs distill's filter alone on growing prefixes of a
bigger stream (by default 5,000, 20,000 and 50,000 instructions) to show how its cost grows.

`--scale` instead measures the exact threshold join at scale: the full scan (every pair
scored, `novelty.full_scan`, what `score_kept: true` runs) against the join
(`novelty_join.threshold_join`, what the filter runs by default) on one stream (50,000 by
default; interleaved repeats, medians), with the differing decisions, dropped texts'
maxima and most similar instructions (all must be 0, else it exits 1), then the join
alone on growing streams (10K, 50K, 200K, 1M by default), each skipped when its
predicted time would overrun `--budget` seconds. `--stream zipf` replaces the templated
stream by novel texts: a 30,000-word vocabulary drawn with Zipf exponent 1.1, 6-20 words,
35% edits of recent ones.

    .venv/bin/python scripts/bench_novelty.py            # n=2000, big-n=50000: a few minutes
    .venv/bin/python scripts/bench_novelty.py --quick    # seconds: a smoke run
    .venv/bin/python scripts/bench_novelty.py --scale    # 50K check + growth to 1M: minutes
    .venv/bin/python scripts/bench_novelty.py --scale --stream zipf
    .venv/bin/python scripts/bench_novelty.py --scale --check-n 3000 --sizes 1000,4000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from rouge_score import rouge_scorer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.filters.base import FilterContext  # noqa: E402
from distill.filters.novelty import Config, full_scan  # noqa: E402
from distill.filters.novelty_join import threshold_join  # noqa: E402
from distill.records import Example  # noqa: E402

# ---------------------------------------------------------------------------------------
# The instruction stream: templates filled from word lists, and edits of earlier ones.


def _words(text: str) -> list[str]:
    return text.split()


ADJECTIVES = _words("""sustainable urban remote rural digital ancient modern renewable local global
healthy affordable small large quiet busy historical scientific creative competitive
personal professional public private online seasonal traditional experimental coastal
tropical arctic medieval industrial agricultural financial emotional social political
economic cultural naïve mobile open-source wireless electric autonomous organic""")
NOUNS = _words("""gardening energy transport education banking tourism farming cooking photography
journalism architecture music theatre cinema poetry chess football cycling hiking sailing
volcanoes glaciers forests deserts oceans rivers bees whales robots satellites vaccines
batteries bridges markets elections museums libraries hospitals schools startups
restaurants cafés bakeries airports railways newspapers podcasts smartphones databases
algorithms spreadsheets passwords budgets loans taxes pensions résumés interviews
meetings deadlines habits friendships neighbourhoods festivals recycling composting
translation dialects grammar vocabulary fractions geometry probability statistics
telescopes planets comets earthquakes hurricanes droughts floods wildfires""")
NOUNS += _words("""soil wheat coffee chocolate cheese bread rice tea wine honey salt sugar
copper steel glass plastic cotton wool paper ink clay marble concrete timber lithium
bicycles trams ferries trucks drones rockets submarines elevators tunnels harbours canals
parks gardens zoos stadiums theatres galleries cathedrals castles villages suburbs
islands mountains valleys caves lakes wetlands reefs meadows prairies jungles tundra
sleep memory attention motivation creativity anxiety curiosity empathy leadership trust
negotiation persuasion storytelling humour etiquette hospitality volunteering parenting
inflation unemployment insurance mortgages subscriptions auctions tariffs patents
contracts lawsuits elections referendums censorship privacy surveillance encryption
compilers browsers keyboards printers routers servers sensors thermostats microscopes
vaccination nutrition fitness yoga meditation dentistry surgery pharmacies ambulances
dinosaurs fossils insects spiders owls wolves horses dolphins penguins octopuses
mushrooms orchids cacti seaweed bamboo tulips oak pollen seeds fertiliser irrigation
origami knitting pottery calligraphy carpentry welding juggling magic karaoke dancing
opera jazz hip-hop folklore mythology philosophy ethics logic rhetoric linguistics
genetics chemistry optics acoustics thermodynamics astronomy meteorology oceanography
""")
PLACES = _words("""Paris Lagos Tokyo Lima Oslo Nairobi Zürich Kraków Montréal Reykjavík Hanoi
Cairo Lisbon Seoul Mumbai Dublin Quito Perth Vienna Istanbul Havana Dakar Bogotá Riga
Marseille Chennai Auckland Helsinki Tunis Accra""")
AUDIENCES = _words("""children teenagers beginners students parents teachers retirees engineers
nurses managers tourists investors farmers designers programmers scientists voters
customers volunteers athletes""")
FORMS = _words("""poem story essay blog post tweet speech letter dialogue haiku limerick slogan
headline summary review advertisement riddle joke""")
LANGUAGES = _words("French Spanish German Italian Portuguese Japanese Swahili Dutch Polish")
ASPECTS = _words("cost safety speed comfort reliability popularity history impact risks")
TIMES = ["a week", "a month", "three months", "a year", "30 days", "one weekend"]

TEMPLATES = [
    "Write a short {form} about {topic} for {audience}.",
    "Explain how {topic} works to {audience} in simple terms.",
    "Give {n} tips for {audience} who are interested in {topic}.",
    "Summarize the main arguments for and against {topic} in {n} sentences.",
    "Classify the following items as related to {topic} or to {topic2}.",
    "Translate the following sentence about {topic} into {language}.",
    "Generate a list of {n} questions a journalist could ask about {topic}.",
    "Compare {topic} and {topic2} in terms of {aspect}.",
    "Rewrite the following paragraph about {topic} so that {audience} can understand it.",
    "Suggest a catchy name for a company that works on {topic}.",
    "Describe the biggest challenges facing {topic} today.",
    "What are the main causes of the decline in {topic}?",
    "Create a weekly plan that helps {audience} learn about {topic} within {time}.",
    "Find the average of the numbers {n}, {n2} and {n3}.",
    "Identify the main idea of the given text about {topic}.",
    "Propose three ways to reduce the {aspect} problems of {topic}.",
    "Write an email to {audience} announcing a workshop on {topic}.",
    "List {n} common mistakes people make with {topic} and how to avoid them.",
    "Design a quiz with {n} questions on {topic} for {audience}.",
    "Argue whether {topic} is more important than {topic2} for {audience}.",
    "Invent a {form} that teaches {audience} something about {topic}.",
    "Predict how {topic} will change over the next {n} years.",
    "Outline the history of {topic} in {n} bullet points.",
    "Convert {n} kilometres to miles and explain the calculation.",
    "Tell me whether the statement \"{topic} is overrated\" is a fact or an opinion.",
    "Brainstorm {n} creative project ideas combining {topic} and {topic2}.",
    "Analyze the {aspect} of {topic} from the point of view of {audience}.",
    "Recommend {n} books about {topic} and say why each is worth reading.",
    "Edit the following sentence about {topic} for grammar and clarity.",
    "Draft a short interview with an expert on {topic} about its {aspect}.",
    "Is it a good idea for {audience} to invest time in {topic}? Answer with reasons.",
    "Turn the notes below into a {form} about {topic}.",
    "Sort these {n} events in {topic} in chronological order.",
    "Estimate how much {topic} costs a typical household per year.",
    "Point out the logical fallacy in this argument about {topic}.",
    "Pretend you are {audience} and complain politely about {topic}.",
    "Name {n} famous people associated with {topic}.",
    "Define the term {topic} in one sentence.",
    "Which is better for {audience}, {topic} or {topic2}?",
    "How would you teach {topic} to a group of {audience}?",
    "Make up a {form} whose main character is obsessed with {topic}.",
    "Detect the sentiment of this review of a {topic} product.",
    "Fill in the blank: the most underrated part of {topic} is ___.",
    "Extract every date mentioned in the article about {topic}.",
    "Paraphrase the sentence \"{topic} changed my life\" in {n} different ways.",
    "Plan a {time} trip for {audience} centred on {topic}.",
    "Evaluate the claim that {topic} reduces {aspect} by {n2} percent.",
    "Generate a title for a documentary on {topic}.",
    "Why do {audience} often misunderstand {topic}?",
    "Write a product description for a gadget that helps with {topic}.",
]
OPENERS = ["In your own words,", "Briefly,", "As an expert,", "For a school project,",
           "Here is a task:", "Hypothetically,"]
CONSTRAINTS = ["Use no more than {n} sentences.", "Include at least one example.",
               "Avoid technical terms.", "Format the answer as a table.",
               "Mention {topic2} at least once.", "Keep a humorous tone.",
               "Cite one statistic.", "Write it for a {language} reader.",
               "End with a question.", "Use bullet points.", "Focus on {aspect}.",
               "Assume the reader knows nothing about {topic2}.",
               "Do not exceed {n2} words.", "Give the answer first, then explain."]

SYNONYMS = {
    "write": ["compose", "draft", "create"], "short": ["brief", "little"],
    "explain": ["describe", "clarify"], "give": ["provide", "offer", "share"],
    "tips": ["suggestions", "pieces of advice", "ideas"], "main": ["key", "principal"],
    "list": ["set", "collection"], "generate": ["produce", "come up with"],
    "compare": ["contrast"], "suggest": ["propose", "recommend"],
    "describe": ["explain", "discuss"], "biggest": ["largest", "most serious"],
    "create": ["make", "build", "design"], "find": ["compute", "calculate"],
    "identify": ["determine", "point out"], "ways": ["methods", "strategies"],
    "common": ["frequent", "typical"], "questions": ["prompts", "queries"],
    "simple": ["plain", "easy"], "today": ["nowadays", "at present"],
    "helps": ["allows", "enables"], "catchy": ["memorable", "clever"],
}
FILLERS = ["please", "briefly", "carefully", "clearly", "in detail", "step by step",
           "concisely", "for me", "quickly", "with examples"]
PREFIXES = ["Please", "Can you", "I would like you to", "Your task is to", "Now"]
SUFFIXES = ["in under 100 words", "using simple language", "with a friendly tone",
            "and keep it short", "— be specific", "(no jargon)", "in a formal style"]


def fresh(rng: random.Random) -> str:
    """A new instruction from a template."""
    def topic() -> str:
        adjective, noun, other = rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(NOUNS)
        return rng.choice([f"{adjective} {noun}", f"{noun} and {other}",
                           f"{adjective} {noun} in {rng.choice(PLACES)}",
                           f"the {noun} of {adjective} {other}", f"{noun} for {other}"])
    template = rng.choice(TEMPLATES)
    if rng.random() < 0.15:
        template = f"{rng.choice(OPENERS)} {template[0].lower()}{template[1:]}"
    if rng.random() < 0.5:
        template = f"{template} {rng.choice(CONSTRAINTS)}"
    return template.format(
        form=rng.choice(FORMS), topic=topic(), topic2=topic(), audience=rng.choice(AUDIENCES),
        language=rng.choice(LANGUAGES), aspect=rng.choice(ASPECTS), time=rng.choice(TIMES),
        n=rng.randint(2, 12), n2=rng.randint(10, 999), n3=rng.randint(10, 999))


def paraphrase(text: str, rng: random.Random) -> str:
    """A near-duplicate: one to three small edits of an earlier instruction."""
    for _ in range(rng.randint(1, 3)):
        end = text[-1] if text[-1] in ".?!" else ""
        words = text[:len(text) - len(end)].split()
        op = rng.random()
        if op < 0.35:  # a word swapped for a synonym, or a slot word for another of its kind
            options = [i for i, w in enumerate(words) if _bare(w) in SWAPS]
            if options:
                i = rng.choice(options)
                bare = _bare(words[i])
                new = rng.choice(SWAPS[bare])
                if words[i][:1].isupper():
                    new = new[0].upper() + new[1:]
                start = words[i].lower().index(bare)
                words[i] = words[i][:start] + new + words[i][start + len(bare):]
        elif op < 0.55:  # a word or phrase added after the verb or at the end
            words.insert(1 if rng.random() < 0.5 else len(words), rng.choice(FILLERS))
        elif op < 0.65:  # an adjective or filler word dropped
            options = [i for i, w in enumerate(words) if i and _bare(w) in DROPPABLE]
            if options:
                words.pop(rng.choice(options))
        elif op < 0.85:  # clauses reordered: sentences swapped, or "X for Y" -> "For Y, x"
            sentences = re.split(r"(?<=[.?!]) ", text)
            if len(sentences) > 1:
                return " ".join([*sentences[1:], sentences[0]])
            if "for" in words[2:-1]:
                cut = len(words) - 1 - words[::-1].index("for")
                words = ["For", *words[cut + 1:-1], words[-1] + ",", words[0].lower(),
                         *words[1:cut]]
        elif op < 0.93:
            words = [rng.choice(PREFIXES), words[0].lower(), *words[1:]]
        else:
            words = [*words, rng.choice(SUFFIXES)]
        text = " ".join(words) + end
    return text


def _bare(word: str) -> str:
    return word.strip(".,?!;:\"()").lower()


# What a word may become in a paraphrase: a synonym, or another word of its slot.
SWAPS = {word.lower(): kind for kind in (ADJECTIVES, NOUNS, AUDIENCES, ASPECTS, PLACES)
         for word in kind} | SYNONYMS
DROPPABLE = set(ADJECTIVES) | {"short", "main", "catchy", "biggest", "common", "simple",
                               "following", "creative", "famous"}


def zipf_stream(n: int, seed: int, vocabulary: int = 30_000, near_duplicates: float = 0.35,
                exponent: float = 1.1) -> list[str]:
    """n novel texts: Zipf-distributed words, 6-20 each; a fraction edit a recent text."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, vocabulary + 1) ** exponent
    words = np.array([f"{chr(97 + i % 26)}{i}" for i in range(vocabulary)])
    draws = iter(words[rng.choice(vocabulary, size=n * 20, p=weights / weights.sum())])
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < near_duplicates:
            text = out[-int(rng.integers(1, min(len(out), 200) + 1))].split()
            for _ in range(int(rng.integers(1, 4))):  # a word swapped, added or dropped
                op, at = rng.random(), int(rng.integers(len(text)))
                if op < 0.4:
                    text[at] = next(draws)
                elif op < 0.7:
                    text.insert(at, next(draws))
                elif len(text) > 1:
                    text.pop(at)
        else:
            text = [next(draws) for _ in range(int(rng.integers(6, 21)))]
        out.append(" ".join(text))
    return out


def stream(n: int, seed: int, near_duplicates: float = 0.35) -> list[str]:
    """n instructions; a fraction are paraphrases of recent ones (as a teacher repeats itself)."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < near_duplicates:
            out.append(paraphrase(out[-rng.randint(1, min(len(out), 200))], rng))
        else:
            out.append(fresh(rng))
    return out


# ---------------------------------------------------------------------------------------
# The two filters.


def alpaca_filter(seeds: list[str], candidates: list[str], processes: int
                  ) -> tuple[list[bool], list[float]]:
    """stanford_alpaca generate_instruction.py's ROUGE-L filter, as written there."""
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    all_instructions = list(seeds)
    all_instruction_tokens = [scorer._tokenizer.tokenize(inst) for inst in all_instructions]
    keeps, maxima = [], []
    for instruction in candidates:
        new_instruction_tokens = scorer._tokenizer.tokenize(instruction)
        with Pool(processes) as p:
            rouge_scores = p.map(partial(rouge_scorer._score_lcs, new_instruction_tokens),
                                 all_instruction_tokens)
        rouge_scores = [score.fmeasure for score in rouge_scores]
        most_similar_instructions = {  # noqa: F841 (Alpaca stores these with the record)
            all_instructions[i]: rouge_scores[i] for i in np.argsort(rouge_scores)[-10:][::-1]}
        maxima.append(max(rouge_scores))
        if max(rouge_scores) > 0.7:
            keeps.append(False)
            continue
        keeps.append(True)
        all_instructions.append(instruction)
        all_instruction_tokens.append(new_instruction_tokens)
    return keeps, maxima


def distill_filter(seeds: list[str], candidates: list[str]
                   ) -> tuple[list[bool], list[float | None]]:
    """distill's NoveltyFilter over the same stream (maxima for dropped records only)."""
    seed_examples = [Example(id=f"seed-{i}", instruction=s) for i, s in enumerate(seeds)]
    records = [Example(id=str(i), instruction=c) for i, c in enumerate(candidates)]
    verdicts = Config().build(FilterContext(seed_tasks=lambda: seed_examples))(records)
    return [v.keep for v in verdicts], [v.scores.get("rouge_l_max") for v in verdicts]


def pairs_scored(n_seeds: int, keeps: list[bool]) -> int:
    """Pairs compared: each candidate against the pool as it stood (seeds + kept before)."""
    return int(np.sum(n_seeds + np.concatenate([[0], np.cumsum(keeps)[:-1]])))


def pool_startup(processes: int, repeats: int = 10) -> float:
    """Seconds to start, use and close one Pool, as Alpaca does for every candidate."""
    start = time.perf_counter()
    for _ in range(repeats):
        with Pool(processes) as p:
            p.map(abs, [0])
    return (time.perf_counter() - start) / repeats


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def scale(args: argparse.Namespace, console: Console) -> int:
    """Full scan against the threshold join, then the join's growth; differing outputs."""
    sizes = sorted(int(size) for size in args.sizes.split(","))
    start = time.perf_counter()
    if args.stream == "zipf":
        seeds = zipf_stream(args.seeds, args.seed + 1_000_003, near_duplicates=0.0)
        candidates = zipf_stream(max(args.check_n, *sizes), args.seed)
    else:
        seeds = stream(args.seeds, args.seed + 1_000_003, near_duplicates=0.0)
        candidates = stream(max(args.check_n, *sizes), args.seed)
    console.print(f"{args.stream} stream of {len(candidates):,} built in "
                  f"{time.perf_counter() - start:.0f} s; {len(seeds)} seeds; "
                  f"{_threads()} threads")
    join = partial(threshold_join, dense_pairs=args.dense_pairs)
    join(seeds, candidates[:300], 0.7, dense_pairs=0)  # compiled (or loaded) outside timings

    checked = candidates[:args.check_n]
    full_times, join_times = [], []
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        full, seconds = timed(full_scan, seeds, checked, 0.7)
        full_times.append(seconds)
        joined, seconds = timed(join, seeds, checked, 0.7)
        join_times.append(seconds)
    full_s, join_s = float(np.median(full_times)), float(np.median(join_times))
    dropped = [i for i, keep in enumerate(full.keep) if not keep]
    differing = (sum(a != b for a, b in zip(full.keep, joined.keep, strict=True)),
                 sum(full.score[i] != joined.score[i] for i in dropped),
                 sum(full.similar[i] != joined.similar[i] for i in dropped))
    pairs = pairs_scored(len(seeds), full.keep)
    console.print(f"{args.check_n:,} instructions ({sum(full.keep):,} kept, {pairs:,} pairs; "
                  f"the join verified {joined.verified:,}): full scan {full_s:.1f} s, join "
                  f"{join_s:.1f} s (medians of {args.repeats}); speed ratio "
                  f"[bold]{full_s / join_s:.1f}x[/bold]")
    console.print(f"differing decisions: [bold]{differing[0]}[/bold]; differing dropped "
                  f"maxima: {differing[1]}; differing most similar: {differing[2]}")

    growth = Table(title=f"join alone, growing {args.stream} streams (threshold 0.7)")
    for column in ("instructions", "seconds", "kept", "pairs verified", "full-scan pairs",
                   "full scan, estimated", "ratio, estimated"):
        growth.add_column(column, justify="right")
    rate = pairs / full_s  # the full scan's pairs per second, measured above
    spent, done = 0.0, []
    for size in sizes:
        if len(done) >= 2:  # predict from the growth exponent of the last two sizes
            (n1, t1), (n2, t2) = done[-2:]
            predicted = t2 * (size / n2) ** max(1.0, np.log(t2 / t1) / np.log(n2 / n1))
        else:
            predicted = done[-1][1] * size / done[-1][0] if done else 0.0
        if spent + predicted > args.budget:
            growth.add_row(f"{size:,}", f"skipped (predicted {duration(predicted)})", "", "",
                           "", "", "")
            continue
        result, seconds = timed(join, seeds, candidates[:size], 0.7)
        spent += seconds
        done.append((size, seconds))
        full_pairs = pairs_scored(len(seeds), result.keep)
        growth.add_row(f"{size:,}", f"{seconds:.1f}", f"{sum(result.keep):,}",
                       f"{result.verified:,}", f"{full_pairs:,}", duration(full_pairs / rate),
                       f"{full_pairs / rate / seconds:.1f}x")
    console.print(growth)
    return int(any(differing))


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="stream length for the comparison")
    parser.add_argument("--big-n", type=int, default=50000,
                        help="largest stream for distill's filter alone (also runs 10%% and 40%%)")
    parser.add_argument("--seeds", type=int, default=175, help="seed instructions (Alpaca: 175)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the stream")
    parser.add_argument("--quick", action="store_true", help="n=200, big-n=3000: a smoke run")
    parser.add_argument("--scale", action="store_true",
                        help="full scan against the threshold join, then the join's growth curve")
    parser.add_argument("--stream", choices=("bench", "zipf"), default="bench",
                        help="--scale: templated instructions, or novel texts (Zipf words)")
    parser.add_argument("--dense-pairs", type=int, default=None,
                        help="--scale: the join runs the dense full scan up to this many "
                        "pairs (default: the filter's own; 0 always joins)")
    parser.add_argument("--check-n", type=int, default=50000,
                        help="--scale: stream length where the full scan and the join are "
                        "compared")
    parser.add_argument("--repeats", type=int, default=1,
                        help="--scale: interleaved repeats of the comparison (medians)")
    parser.add_argument("--sizes", default="10000,50000,200000,1000000",
                        help="--scale: stream lengths of the growth curve, comma-separated")
    parser.add_argument("--budget", type=float, default=600,
                        help="--scale: seconds the growth curve may take; sizes predicted "
                        "to overrun it are skipped")
    args = parser.parse_args()
    if args.scale:
        sys.exit(scale(args, Console()))
    if args.quick:
        args.n, args.big_n = 200, 3000

    console = Console()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    seeds = stream(args.seeds, args.seed + 1_000_003, near_duplicates=0.0)
    candidates = stream(max(args.n, args.big_n), args.seed)
    console.print(f"{cores} cores; {len(seeds)} seed instructions; stream of {args.n} with "
                  f"near-duplicates, e.g.:")
    for text in candidates[40:46]:
        console.print(f"  {text}", markup=False, highlight=False)

    compared = candidates[:args.n]
    distill_filter(seeds, candidates[:10])  # warm-up: rapidfuzz imported outside the timing
    (alpaca_keep, alpaca_max), alpaca_s = timed(alpaca_filter, seeds, compared, cores)
    (ours_keep, ours_max), ours_s = timed(distill_filter, seeds, compared)
    differing = sum(a != b for a, b in zip(alpaca_keep, ours_keep, strict=True))
    score_diffs = sum(a != b for a, b, keep in zip(alpaca_max, ours_max, alpaca_keep,
                                                    strict=True) if not keep)
    pairs = pairs_scored(len(seeds), alpaca_keep)
    near_threshold = sum(0.6 < s <= 0.8 for s in alpaca_max)

    table = Table(title=f"ROUGE-L novelty filter, {args.n} instructions (threshold 0.7)")
    for column in ("filter", "seconds", "pairs/s", "kept", "dropped"):
        table.add_column(column, justify="right" if column != "filter" else "left")
    table.add_row(f"Alpaca: rouge_score, Pool({cores}) per candidate", f"{alpaca_s:.2f}",
                  f"{pairs / alpaca_s:,.0f}", str(sum(alpaca_keep)),
                  str(len(compared) - sum(alpaca_keep)))
    table.add_row("distill NoveltyFilter (rapidfuzz)", f"{ours_s:.3f}", f"{pairs / ours_s:,.0f}",
                  str(sum(ours_keep)), str(len(compared) - sum(ours_keep)))
    console.print(table)
    console.print(f"speed ratio: [bold]{alpaca_s / ours_s:,.0f}x[/bold]; differing decisions: "
                  f"[bold]{differing}[/bold]; differing max scores: {score_diffs} "
                  f"(of the dropped ones, which the filter scores; {pairs:,} pairs; "
                  f"{near_threshold} candidates scored in (0.6, 0.8])")

    # Alpaca's time = a Pool start-up per candidate + the pairs; split them for the estimates.
    startup = pool_startup(cores)
    pair_rate = pairs / max(alpaca_s - startup * len(compared), 1e-9)
    console.print(f"Alpaca's cost: {startup * 1e3:.0f} ms of Pool start-up per candidate + "
                  f"{pair_rate:,.0f} pairs/s; distill's filter scores every pair too.")

    sizes = sorted({args.big_n // 10, args.big_n * 2 // 5, args.big_n})
    growth = Table(title="distill NoveltyFilter alone, growing streams")
    for column in ("instructions", "seconds", "kept", "pairs scored", "pairs/s",
                   "Alpaca, estimated"):
        growth.add_column(column, justify="right")
    for size in sizes:
        (keeps, _), seconds = timed(distill_filter, seeds, candidates[:size])
        pairs = pairs_scored(len(seeds), keeps)
        estimate = size * startup + pairs / pair_rate
        growth.add_row(f"{size:,}", f"{seconds:.2f}", f"{sum(keeps):,}", f"{pairs:,}",
                       f"{pairs / seconds:,.0f}", duration(estimate))
    console.print(growth)
    if differing or score_diffs:
        sys.exit(1)


if __name__ == "__main__":
    main()
