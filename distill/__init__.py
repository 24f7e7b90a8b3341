"""distill: distil large language models into small ones through synthetic data.

Importing this package is cheap: torch, transformers, vLLM and lm-eval are imported
inside the functions that need them.
"""

__version__ = "0.1.0"

# The logger of distill's own lines that belong in distill.log but not on the console
# (long details behind a one-line warning).
LOG_ONLY = "distill.details"
