"""Build the microworld teacher and student (the same as `distill microworld build`).

    python scripts/build_microworld.py [--seed 0] [--force] [--cache-dir DIR] [--evaluate]

Prints where the models are; the build is cached, so a second run returns at once.
"""

from distill.microworld.cli import app

if __name__ == "__main__":
    app(["build", *__import__("sys").argv[1:]])
