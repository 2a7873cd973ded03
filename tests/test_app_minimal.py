"""The app opens on a store and lists its traces; trace text is never markup."""

from __future__ import annotations

import json

from textual.widgets import DataTable

from db import open_db
from workbench.app import make_app
from workbench.importing import import_files


async def test_app_lists_sample_traces(db_path):
    import_files(open_db(db_path), ["sample_traces"])
    app = make_app(db_path=db_path)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table = app.query_one(DataTable)
        assert table.row_count == 45


async def test_markup_in_source_names_is_shown_literally(db_path, tmp_path):
    evil = tmp_path / "[bold]x[-] [@click=app.quit]y[-].jsonl"
    evil.write_text(json.dumps({"messages": [{"role": "user", "content": "[bold]x[/]"},
                                             {"role": "assistant", "content": "ok"}]}) + "\n")
    import_files(open_db(db_path), [evil])
    app = make_app(db_path=db_path)
    async with app.run_test(size=(200, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(DataTable)
        cell = table.get_row_at(0)[1]
        assert str(cell).endswith("[bold]x[-] [@click=app.quit]y[-].jsonl")
