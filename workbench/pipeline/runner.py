"""Running a pipeline: each stage a child job, skipped when its fingerprint matches a succeeded
job, resumed when it stopped; the report at the end."""

from __future__ import annotations


import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any


from db import jobs as jobstore
from db import pipeline as pstore
from db.queries import TraceFilter
from workbench.jobs.context import (Cancelled, Interrupted, JobContext, JobEvent, Listener,
                                    LogLine, Progress, content_key)
from workbench.pipeline.baseline import raw_selection
from workbench.pipeline.config import STAGES, PipelineConfig, load_pipeline
from workbench.pipeline.report import build_report, report_markdown

def _file_hashes(paths: list[str], task: str | None) -> list[list[str]]:
    from workbench.traces.importing import expand_paths

    files = expand_paths(paths) + ([Path(task)] if task else [])
    out = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out.append([str(f), h.hexdigest()])
    return out


class _Run:
    def __init__(self, ctx: JobContext, cfg: PipelineConfig) -> None:
        self.ctx, self.db, self.cfg = ctx, ctx.db, cfg
        self.rows: dict[str, dict] = {}
        self.data_key: str | None = None
        self.folder = Path(f"runs/pipeline-{ctx.job_id}")

    # the data key: kept from the previous run when the store is as that run left it
    def _ensure_data_key(self) -> None:
        if self.data_key is not None:
            return
        state = pstore.data_state(self.db)
        prev = pstore.last_run_with_state(self.db)
        same = prev is not None and content_key(prev["state"]) == content_key(state)
        self.data_key = prev["data_key"] if same else content_key(state)
        self.ctx.log("data: as the last pipeline run left it" if same else
                     "data: changed since the last pipeline run (or none ran): its stages run")
        pstore.set_run(self.db, self.ctx.job_id, data_key=self.data_key, state=state)

    def _save_state(self) -> None:
        if self.data_key is not None:
            pstore.set_run(self.db, self.ctx.job_id, state=pstore.data_state(self.db))

    def _forward(self, stage: str, child: int) -> list[Listener]:
        """A child's progress and log, shown as the pipeline's; a cancel of the pipeline
        cancels the child."""
        def listener(event: JobEvent) -> None:
            if isinstance(event, Progress):
                text = f"{stage}: {event.message}" if event.message else stage
                self.ctx.emit(Progress(event.done, event.total, text))
                if jobstore.cancel_requested(self.db, self.ctx.job_id):
                    jobstore.request_cancel(self.db, child)
            elif isinstance(event, LogLine):
                self.ctx.emit(LogLine(f"{stage}: {event.text}"))
            else:
                self.ctx.emit(event)
        return [listener]

    def stage(self, stage: str, kind: str, params: Any, selection: TraceFilter | None,
              fingerprint: str, forced: bool) -> dict:
        """Skip, resume or run one stage; returns its (succeeded) job row."""
        from workbench.jobs.registry import REGISTRY
        from workbench.jobs.runner import execute, resume, submit

        spec = REGISTRY.get(kind)
        prior_id = None if forced else pstore.last_stage_job(self.db, stage, fingerprint)
        prior = jobstore.get_job(self.db, prior_id) if prior_id else None
        run_id = self.ctx.job_id
        if prior is not None and prior["status"] == "succeeded":
            pstore.add_stage(self.db, run_id, stage, fingerprint, prior_id, "skipped")
            self.ctx.log(f"{stage}: unchanged since job {prior_id}: skipped")
            self.rows[stage] = prior
            return prior
        if prior is not None and prior["status"] == "running":
            raise RuntimeError(f"stage {stage} is running as job {prior_id} (another pipeline"
                               " run?): wait for it or cancel it (workbench jobs cancel"
                               f" {prior_id})")
        if (prior is not None and prior["status"] in ("failed", "cancelled", "interrupted")
                and spec is not None and spec.resumable):
            resume(self.db, prior_id)
            job_id, action = prior_id, "resumed"
        elif prior is not None and prior["status"] == "queued":
            job_id, action = prior_id, "ran"
        else:
            job_id = submit(self.db, kind, selection, params, parent_id=run_id)
            action = "forced" if forced else "ran"
        pstore.add_stage(self.db, run_id, stage, fingerprint, job_id, action)
        self.ctx.log(f"{stage}: job {job_id} ({action})")
        try:
            row = execute(self.db, job_id, listeners=self._forward(stage, job_id),
                          resume=action == "resumed")
        finally:
            self._save_state()
        self.rows[stage] = row
        if row["status"] == "succeeded":
            return row
        message = f"stage {stage} (job {job_id}) {row['status']}: {row['error'] or ''}"
        if row["status"] == "cancelled":
            raise Cancelled(message)
        if row["status"] == "interrupted":
            raise Interrupted(message)
        raise RuntimeError(message)

    def trained_model(self) -> str:
        result = self.rows["train"]["result"] or {}
        gguf = (result.get("model_ids") or {}).get("gguf")
        if gguf is None:
            raise RuntimeError(f"the train stage (job {self.rows['train']['id']}) wrote no GGUF"
                               " to evaluate")
        return str(gguf)

    def run(self) -> dict:
        cfg, ctx = self.cfg, self.ctx
        pstore.start_run(self.db, ctx.job_id, str(cfg.path))
        names = list(cfg.stages)
        total = len(names) + (2 if cfg.baseline else 0)
        order = {s: i for i, s in enumerate(STAGES)}
        start = order[cfg.from_stage] if cfg.from_stage else len(STAGES)
        upstream = ""
        fps: dict[str, str] = {}
        for i, name in enumerate(names):
            st = cfg.stages[name]
            ctx.progress(i, total, f"{name}: starting")
            if name != "import":
                self._ensure_data_key()
            if not st.available:
                pstore.add_stage(self.db, ctx.job_id, name, "", None, "unavailable")
                ctx.log(f"{name}: not available in this version of workbench: skipped")
                continue
            if name == "import":
                params = st.params
                key: Any = {"stage": name, "params": params,
                            "files": _file_hashes(params["paths"], params["task"])}
                sel = None
            else:
                params = st.params
                if st.model_from_train:
                    params = dataclasses.replace(params, model=self.trained_model())
                params = dataclasses.asdict(params)
                sel = st.selection
                key = {"stage": name, "params": params, "selection": sel.to_dict(),
                       "upstream": upstream, "data": self.data_key}
            fps[name] = upstream = content_key(key)
            self.stage(name, name, params, sel, upstream, forced=order[name] >= start)
        self._ensure_data_key()
        self._save_state()
        if cfg.baseline == "direct":
            self.direct(fps, total, forced_train=start <= order["train"],
                        forced_eval=start <= order["eval"])
        ctx.progress(total, total, "writing the report")
        report = build_report(self.db, ctx.job_id, cfg, self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "report.md").write_text(report_markdown(report), encoding="utf-8")
        (self.folder / "report.json").write_text(json.dumps(report, indent=2, default=str),
                                                 encoding="utf-8")
        ctx.log(f"report: {self.folder / 'report.md'}")
        return report

    def direct(self, fps: dict[str, str], total: int, *, forced_train: bool,
               forced_eval: bool) -> None:
        """--baseline direct: the train stage's parameters on the raw traces, evaluated like
        the eval stage (see RAW_DEFINITION)."""
        train, ev = self.cfg.stages["train"], self.cfg.stages["eval"]
        self.ctx.progress(total - 2, total, "direct-train: starting")
        params = {**dataclasses.asdict(train.params), "suspect": "train", "output": None,
                  "name": None, "resume": False}
        sel = raw_selection(train.selection)
        key = {"stage": "direct-train", "params": params, "selection": sel.to_dict(),
               "raw": pstore.raw_state(self.db), "import": fps.get("import")}
        fp = content_key(key)
        row = self.stage("direct-train", "train-direct", params, sel, fp, forced=forced_train)
        gguf = (row["result"].get("model_ids") or {}).get("gguf")
        if gguf is None:
            raise RuntimeError(f"the direct training (job {row['id']}) wrote no GGUF")
        self.ctx.progress(total - 1, total, "direct-eval: starting")
        eparams = dataclasses.asdict(dataclasses.replace(ev.params, model=str(gguf)))
        key = {"stage": "direct-eval", "params": eparams, "selection": ev.selection.to_dict(),
               "upstream": [fp, fps.get("eval")]}
        self.stage("direct-eval", "eval", eparams, ev.selection, content_key(key),
                   forced=forced_eval)


def run_pipeline(ctx: JobContext, params: Any) -> dict:
    cfg = load_pipeline(params.file, from_stage=params.from_stage, baseline=params.baseline)
    return _Run(ctx, cfg).run()
