"""Attention backends behind a registry with lazy imports (``registry.get_backend``)."""
