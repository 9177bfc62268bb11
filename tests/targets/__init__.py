"""Importable child targets for the tests (a test module is not importable in a child)."""
