"""Reusable Textual widgets. They do no I/O: they render what they are given and post messages.
Every piece of trace text goes through `rich.text.Text` / `Content`, never through markup."""
