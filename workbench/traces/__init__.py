"""Traces as they come in: the import job (formats and importers live beside it for now)."""
