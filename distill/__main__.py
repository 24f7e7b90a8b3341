"""`python -m distill ...` (what `accelerate launch -m distill run ...` executes)."""

from distill.cli import app

if __name__ == "__main__":
    app()
