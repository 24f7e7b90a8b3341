"""Measurements of data and models: perplexity, embeddings, diversity."""
