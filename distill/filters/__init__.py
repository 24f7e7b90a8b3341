"""Quality filters. Each is named in recipes and built lazily from its config."""
