"""Synthesis: new training conversations from a few clean ones, offline (re-filling the values
that flow through the tools) or by a teacher LLM, validated by the checks before any is stored.

Modules: `corpus` (seeds, topics, what the data knows), `offline`, `teacher`, `validate`,
`store`, `report`, and `job` (the `synth` job body).
"""
