"""Operator tools: deploy the patch, verify a running service, run the demo."""
