"""Quality filters: one module each, registered under its `kind` in `distill.registry.FILTERS`."""
