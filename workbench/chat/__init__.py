"""Talking to a model by hand: the `workbench chat` REPL and what the app's chat tester needs (no
Textual)."""
