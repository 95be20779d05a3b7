"""Test data: seeded pre-change databases, sample files and hostile inputs."""
