"""Synthetic data generation methods (Self-Instruct / Alpaca, ...)."""
