"""The declared schema (schema.yaml): model, loading, live introspection, diff, rendering."""
