"""The direct baseline (`--baseline direct`): the same training on the raw traces (originals,
nothing excluded, no flags), in a copy of the store, evaluated on the same test selection."""

from __future__ import annotations


from pathlib import Path
from typing import Any

from db.pipeline import make_raw_store
from db.queries import TraceFilter
from workbench.jobs.context import JobContext

RAW_DROP = ("check", "flagged", "excluded", "status", "has_revisions")   # no flags, no labels
RAW_DEFINITION = (
    "raw = every imported trace outside the test split with its original labels (no"
    " normalisation, no committee or analyst revision), none left out (not the checks', the"
    " relevance judge's nor the analyst's exclusions), suspect turns trained on (suspect ="
    " train), no synthetic traces; identical traces are stored once at import. Same training"
    " parameters and selection otherwise, evaluated with the same parameters on the same test"
    " selection.")



def raw_selection(selection: TraceFilter) -> TraceFilter:
    """The train stage's selection for the raw traces: imported ones, nothing about flags or
    labels (the raw copy has none)."""
    data = {k: v for k, v in selection.to_dict().items() if k not in RAW_DROP}
    return TraceFilter.from_dict({**data, "origin": "imported"})



def run_direct_train(ctx: JobContext, selection: TraceFilter, params: Any) -> dict:
    from db import open_db
    from db.models import list_models, register_model
    from workbench.training.trainer import train

    cfg = params.config(ctx.job_id, resume=ctx.resume)
    raw_path = Path(params.raw_store or Path(cfg.output) / "raw.db")
    if not (cfg.resume and raw_path.exists()):
        ctx.progress(0, None, "copying the raw traces")
        make_raw_store(ctx.db, raw_path)
        ctx.log(f"raw traces: {raw_path} (originals, no flags, nothing excluded)")
    raw = open_db(raw_path)
    try:
        launch = params.launch()
        if launch is not None:     # several processes, as `train` runs them
            from workbench.training.launch import run_launched

            result = run_launched(ctx, raw, cfg, params.data(selection), launch)
        else:
            result = train(raw, cfg, params.data(selection), ctx=ctx)
        raw_models = {m["id"]: m for m in list_models(raw)}
    finally:
        raw.conn.close()
    ids = {}
    for kind, raw_id in result["model_ids"].items():   # registered here too: eval runs it
        m = raw_models[raw_id]
        ids[kind] = register_model(ctx.db, name=m["name"], kind=m["kind"], path=m["path"],
                                   base_model=m["base_model"], job_id=ctx.job_id,
                                   data_selection={**(m["data_selection"] or {}),
                                                   "raw_store": str(raw_path.resolve()),
                                                   "raw": RAW_DEFINITION},
                                   config=m["config"], metrics=m["metrics"])
    ctx.log(f"registered the direct model {result['name']}: {ids}")
    return {**result, "model_ids": ids, "raw_store": str(raw_path.resolve())}
