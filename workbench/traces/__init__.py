"""Traces as they come in: the formats read and written, importing (the import job), outcomes, exporting."""
