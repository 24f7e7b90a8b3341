"""The flywheel and model-collapse study.

Data policies between rounds, real data, stopping rules, the per-round `measure` stage
and `distill sweep` over a grid of runs:

    data.py       real data (a JSONL file or the microworld's generators) and the policies
                  that choose each round's training data
    stopping.py   stop the rounds when a metric plateaus or diversity falls below a floor
    measure.py    the per-round metrics (perplexity, diversity, coverage, scores, costs)
    sweep.py      `distill sweep`: a study file, one run per cell, a comparison report
    plots.py      the matplotlib figures of the comparison report

Nothing heavy is imported here.
"""
