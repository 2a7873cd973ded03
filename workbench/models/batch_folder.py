"""A folder as a Batch API, for batch runners that work on files (vLLM's
`python -m vllm.entrypoints.openai.run_batch -i IN -o OUT --model MODEL`): an endpoint with
`base_url = "file:///some/folder"` and `batch = true` writes each batch's requests to
`FOLDER/wb-HASH.jsonl` (the OpenAI batch input format, which run_batch reads) and takes the
batch as finished when `FOLDER/wb-HASH.out.jsonl` (run_batch's output, the OpenAI batch
output format) holds a result for every request. It offers the few calls of the `openai`
client that `workbench.models.batch_calls` makes, so both paths are one."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

from workbench.core.errors import InputError

SCHEME = "file://"


def folder_of(base_url: str) -> Path:
    return Path(unquote(urlsplit(base_url).path))


class _Files:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def create(self, *, file: tuple[str, bytes], purpose: str) -> Any:
        data = file[1]
        name = f"wb-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"
        path = self.folder / name
        if not path.exists():
            tmp = path.with_suffix(".part")
            tmp.write_bytes(data)
            tmp.replace(path)        # run_batch never sees half a file
        return SimpleNamespace(id=name, purpose=purpose)

    def content(self, file_id: str) -> Any:
        return SimpleNamespace(content=(self.folder / Path(file_id).name).read_bytes())


class _Batches:
    def __init__(self, folder: Path, model: str) -> None:
        self.folder, self.model = folder, model

    def _batch(self, input_file_id: str) -> Any:
        stem = input_file_id.removesuffix(".jsonl")
        out = self.folder / f"{stem}.out.jsonl"
        status, output = "in_progress", None
        if out.exists():
            wanted = {json.loads(x)["custom_id"] for x in
                      (self.folder / input_file_id).read_bytes().splitlines() if x.strip()}
            got = set()
            for line in out.read_bytes().splitlines():
                try:
                    got.add(json.loads(line)["custom_id"])
                except (ValueError, KeyError, TypeError):
                    continue     # a line still being written
            if wanted <= got:
                status, output = "completed", out.name
        return SimpleNamespace(id=stem, input_file_id=input_file_id, status=status,
                               output_file_id=output, error_file_id=None, request_counts=None,
                               errors=None)

    def create(self, *, input_file_id: str, **_: Any) -> Any:
        (self.folder / input_file_id.replace(".jsonl", ".batch")).write_text(input_file_id)
        return self._batch(input_file_id)

    def retrieve(self, batch_id: str) -> Any:
        return self._batch(f"{Path(batch_id).name}.jsonl")

    def list(self, limit: int = 100) -> list[Any]:
        return [self._batch(p.read_text().strip()) for p in
                sorted(self.folder.glob("wb-*.batch"))][:limit]

    def command(self, batch_id: str) -> str:
        """What runs the batch with vLLM."""
        stem = self.folder / Path(batch_id).name
        return (f"python -m vllm.entrypoints.openai.run_batch -i {stem}.jsonl"
                f" -o {stem}.out.jsonl --model {self.model}")


class FolderBatches:
    """The `files` and `batches` calls of an OpenAI client, over a folder."""

    def __init__(self, base_url: str, model: str) -> None:
        self.folder = folder_of(base_url)
        if not self.folder.is_dir():
            raise InputError(f"the batch folder {self.folder} does not exist")
        self.files = _Files(self.folder)
        self.batches = _Batches(self.folder, model)
