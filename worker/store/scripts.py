"""The Lua scripts of the store, loaded in one place.

Each ``lua/<name>.lua`` file is registered once per client (redis-py sends it with
EVALSHA and reloads it if Redis forgot it), as dramatiq's Redis broker does with its
dispatch script. Each script's header gives its key layout, and its first lines name
its KEYS and ARGV.
"""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script


def load_scripts(client: redis.Redis) -> dict[str, Script]:
    """Every script in ``lua/``, by file name without ``.lua``."""
    folder = resources.files(__package__).joinpath("lua")
    return {
        entry.name.removesuffix(".lua"): client.register_script(entry.read_text())
        for entry in folder.iterdir()
        if entry.name.endswith(".lua")
    }


def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua``, for a script sent with EVAL from inside a pipeline
    (a registered script there would cost a ``SCRIPT EXISTS`` round trip per execute)."""
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text()
