"""workbench: curate tool-calling traces, relabel, synthesise, fine-tune and evaluate a small model."""

__version__ = "0.1.0"
