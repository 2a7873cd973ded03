"""The job runtime, in layers that depend one way: ``context`` (what a body sees) <- ``spec``
(a kind's typed parameters and body) <- each feature's ``job.py`` <- ``registry`` <- ``runner``
(the one way a row is made, run, resumed, re-run, detached) <- CLI, app, pipeline.

Import from the submodules; this package module stays empty so that importing
``workbench.jobs.context`` from a feature does not pull in the registry."""
