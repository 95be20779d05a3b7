"""Low-level MongoDB utilities; import nothing else of mongrate."""
