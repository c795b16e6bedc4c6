"""Engines (one module each), providers and media helpers."""
