"""Evaluation: lm-eval benchmarks (harness.py) and the decontamination gate (contamination.py).

Both modules import lm-eval only inside their functions, so importing them is cheap.
"""
