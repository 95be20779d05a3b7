"""The ``op`` surface handed to revision authors."""
