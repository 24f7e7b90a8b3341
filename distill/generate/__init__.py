"""Synthetic data generation methods, one module each, chosen by the recipe's `generate.kind`.

The seam every method implements (settings, `dependencies()`, `run(ctx)`, report section)
is `distill.generate.base.GeneratorSettings`; methods register in
`distill.registry.GENERATORS`.
"""
