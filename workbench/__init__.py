"""Trace-curation workbench: turn tool-calling agent traces into a fine-tuned small model."""
