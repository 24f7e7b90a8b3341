"""Markdown views of a `ContaminationReport`: each flagged item beside its benchmark match.

Used by the run report (report.md, per round) and by `distill decontaminate`
(contamination.md). One row per flagged training item, with its best match: kind (ngram,
coverage, paraphrase), score (coverage of the benchmark item or of the example; cosine for
a paraphrase), task, document, the benchmark text and the evidence (shared words, or the
judge's verdict and how the paraphrase's numbers and words compare with the item's).
"""

from __future__ import annotations

from collections.abc import Sequence

from distill.evaluate.contamination import ContaminatedExample, ContaminationReport

HEADER = ("| item | kind | score | task | doc | training text | benchmark text | evidence |",
          "|---|---|---|---|---|---|---|---|")


def item_rows(entries: Sequence[ContaminatedExample], limit: int | None = 50) -> list[str]:
    """A Markdown table of `entries`, one row each; no lines for an empty list.

    At most `limit` rows, then a line saying how many more there are.
    """
    if not entries:
        return []
    shown = list(entries) if limit is None else list(entries)[:limit]
    lines = list(HEADER)
    for entry in shown:
        match = entry.matches[0]
        lines.append("| " + " | ".join([
            f"`{_cell(entry.id, 60)}`", entry.kind, _score(entry.score), match.task,
            str(match.doc_index), _cell(entry.excerpt, 120), _cell(match.doc_text, 120),
            _cell(evidence(entry), 100)]) + " |")
    if len(shown) < len(entries):
        lines.append(f"\n({len(entries) - len(shown)} more in contamination.json)")
    return lines


def evidence(entry: ContaminatedExample) -> str:
    """What the best match rests on, in words."""
    match = entry.matches[0]
    if match.kind == "paraphrase":
        verdict = f", judge: {match.judge}" if match.judge else ", no judge"
        words = f"; {match.evidence}" if match.evidence else ""
        return f"cosine {_score(match.score)}{verdict}{words}"
    text = f'{match.view}: "{match.ngram}"'
    if entry.coverage_class:
        text += f" ({entry.coverage_class})"
    if len(entry.matches) > 1:
        text += f"; +{len(entry.matches) - 1} more document(s)"
    return text


def settings_line(report: ContaminationReport) -> str:
    """The method and thresholds in one sentence."""
    if report.method == "coverage":
        text = (f"{report.ngram}-gram coverage of the {report.coverage_of}: dirty above "
                f"{report.dirty_above} (flagged), partial from {report.clean_below} (listed)")
    else:
        text = f"any shared {report.ngram}-gram (or whole benchmark text under {report.ngram} "
        text += f"words, at least {report.min_doc_words})"
    if report.paraphrase is not None:
        para = report.paraphrase
        confirm = (f"judge {para.get('judge')}, else {para.get('confirm')}"
                   if para.get("judge") else str(para.get("confirm")))
        text += (f"; paraphrases: top-1 cosine >= {para.get('threshold')} "
                 f"({para.get('model')}), confirmed by {confirm}")
    return text


def markdown(report: ContaminationReport, source: str, limit: int | None = 1000) -> str:
    """A standalone report: settings, counts per task, flagged items, suspects."""
    lines = ["# Decontamination report", "",
             f"Data `{source}`: {report.checked} records checked against "
             f"{len(report.tasks)} benchmark task(s) in {report.seconds:.1f} s.", "",
             f"Method: {settings_line(report)}.", "",
             f"**{len(report.contaminated)} flagged**, {len(report.suspect)} suspect "
             "(listed, not flagged).", "",
             "| task | documents | flagged items | documents hit |", "|---|---|---|---|"]
    for name, stats in report.tasks.items():
        lines.append(f"| {name} | {stats.docs} | {stats.contaminated_examples} | "
                     f"{stats.contaminated_docs} |")
    lines.append("")
    if report.paraphrase is not None:
        para = report.paraphrase
        lines += [f"Paraphrase detector: {para.get('candidates', 0)} candidates at or above "
                  f"the threshold, {para.get('flagged', 0)} confirmed and flagged, "
                  f"{para.get('unconfirmed', 0)} not confirmed (suspect; "
                  f"{para.get('judge_different', 0)} rejected by the judge), "
                  f"{para.get('judge_unclear', 0)} unclear judge answers (decided by "
                  "the agreement check).", ""]
    if report.contaminated:
        lines += ["## Flagged", ""] + item_rows(report.contaminated, limit) + [""]
    if report.suspect:
        lines += ["## Suspect (kept)", ""] + item_rows(report.suspect, limit) + [""]
    return "\n".join(lines) + "\n"


def _score(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def _cell(text: str, limit: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"
