"""workbench: turn tool-calling LLM agent traces into a fine-tuned small model."""
