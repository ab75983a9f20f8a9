"""Replaying recordings into isolated pipelines, and verifying decisions (docs/DESIGN.md)."""
