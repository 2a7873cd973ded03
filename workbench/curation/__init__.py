"""Curation: the analyst's and the normaliser's changes to labels (the normalize job)."""
