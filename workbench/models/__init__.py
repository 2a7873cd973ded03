"""Models: local backends and chat templates, OpenAI-compatible endpoints, `--model` references, and
replies read before anything keeps them."""
