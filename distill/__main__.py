"""`python -m distill ...`, the same as the `distill` command."""

from distill.cli import app

if __name__ == "__main__":
    app()
