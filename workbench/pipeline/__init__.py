"""`workbench pipeline`: the whole loop from one TOML file, as child jobs of one pipeline job.

A pipeline file has a table per stage, run in the order of :data:`STAGES`. A stage's table holds
its job's parameters under their own names (the fields of the spec's ``Params``, which are the
CLI options: ``--max-steps`` is ``max_steps``), validated by the spec, plus an optional
``selection`` sub-table (the selection options of the commands). ``[import]`` takes the import
command's ``paths``, ``split``, ``task`` and ``max_message_bytes``. A stage whose job kind is not
registered in this build (``synth`` before synthesis exists) is reported as not available.

Skipping and resuming. Each stage has a fingerprint: a content hash of its parameters and
selection, of the stage before it (a change upstream re-runs everything downstream) and of the
data the stages read. That last part is a key, not the data itself: when the store is exactly as
the previous pipeline run left it (traces, labels, flags, exclusions, task, settings:
``db.pipeline.data_state``), the previous run's key is kept, so what the stages wrote themselves
does not count as a change; anything else that changed the store (an import, an analyst's
decision, a check run by hand) gives a new key and the stages run again. ``[import]`` is keyed by
its files' SHA-256. A stage whose fingerprint matches a succeeded job is skipped; one whose job
stopped (failed, cancelled, interrupted) is resumed when its kind resumes (train, eval, relabel,
relevance, synth), else run again; ``--from STAGE`` runs that stage and the ones after it anyway.
"""
