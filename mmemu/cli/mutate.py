"""``mmemu mutate``: its parameters and help live in mmemu/mutate/_cli.py,
beside the code they drive; registered here on the app."""

from __future__ import annotations

from mmemu.mutate._cli import mutate as _mutate

from ._app import app

app.command(name="mutate")(_mutate)
