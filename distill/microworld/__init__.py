"""The microworld: a small world of tasks whose answers can be checked exactly.

Fourteen task families (arithmetic, comparing and sorting numbers, list operations,
unit conversions, dates, word problems, counting letters, reversing words, sequences,
Python expressions) with procedural generators at three difficulties and exact
verifiers, Zipf-distributed family frequencies, a teacher and a student trained from
scratch on the world (`build`), and a held-out lm-eval benchmark (`benchmark`).

    from distill.microworld.tasks import generate_tasks, check
    from distill.microworld.build import build_models, resolve_model_ref

Nothing heavy is imported here.
"""
