"""Generation backends behind one protocol, chosen by name and imported lazily."""

from distill.backends.base import (
    Backend,
    Generation,
    GenerationRequest,
    Sampling,
    load_backend,
)

__all__ = ["Backend", "Generation", "GenerationRequest", "Sampling", "load_backend"]
