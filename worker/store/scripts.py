"""The Lua scripts of the store, loaded in one place.

Each ``lua/<name>.lua`` file is registered once per client (redis-py sends it with
EVALSHA and reloads it if Redis forgot it), as dramatiq's Redis broker does with its
dispatch script. Each script's header gives its key layout, and its first lines name
its KEYS and ARGV.

Redis scripts cannot call each other: the functions several scripts share live in
``lua/prelude.lua``, which :func:`script_source` puts in front of every script.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from importlib import resources
from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

#: The file of shared functions put in front of every script (``lua/prelude.lua``).
PRELUDE = "prelude"
#: One script call: its KEYS and its ARGV.
Call = tuple[Sequence[str], Sequence[Any]]


def load_scripts(client: redis.Redis) -> dict[str, Script]:
    """Every script in ``lua/``, by file name without ``.lua``."""
    folder = resources.files(__package__).joinpath("lua")
    names = [
        name.removesuffix(".lua")
        for entry in folder.iterdir()
        if (name := entry.name).endswith(".lua") and name != f"{PRELUDE}.lua"
    ]
    return {name: client.register_script(script_source(name)) for name in names}


def run_pipelined(
    client: redis.Redis, script: Script, calls: Sequence[Call], *, raise_on_error: bool = True
) -> list[Any]:
    """Run ``script`` once per call, pipelined: one round trip on a single Redis, one per
    node on a Redis Cluster; the answers in the order of ``calls``. With
    ``raise_on_error=False`` a script's error is returned in its call's place (only a
    failed round trip raises).

    redis-py's cluster pipeline refuses scripts, so on a cluster the calls are grouped by
    the node serving their first key's slot and sent on that node's own connection (each
    call's keys share one slot, as every script here requires). A call the node answers
    with a redirection (a slot moving while the cluster reshards) is run again through
    the cluster client, which follows it.
    """
    if not isinstance(client, RedisCluster):
        pipe = client.pipeline(transaction=False)
        for keys, args in calls:
            script(keys=keys, args=args, client=pipe)
        return pipe.execute(raise_on_error=raise_on_error)
    by_node: dict[Any, list[int]] = defaultdict(list)
    for i, (keys, _args) in enumerate(calls):
        by_node[client.get_node_from_key(keys[0])].append(i)
    answers: list[Any] = [None] * len(calls)
    for node, indexes in by_node.items():
        pipe = node.redis_connection.pipeline(transaction=False)
        for i in indexes:
            script(keys=calls[i][0], args=calls[i][1], client=pipe)
        for i, answer in zip(indexes, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(answer, redis.exceptions.ResponseError) and str(answer).startswith(
                ("MOVED", "ASK")
            ):
                answer = script(keys=calls[i][0], args=calls[i][1], client=client)
            elif isinstance(answer, Exception) and raise_on_error:
                raise answer
            answers[i] = answer
    return answers


def script_source(name: str) -> str:
    """The text of ``lua/<name>.lua`` after the prelude, as it runs: what
    :func:`load_scripts` registers, and what a script sent with EVAL from inside a
    pipeline sends (a registered script there would cost a ``SCRIPT EXISTS`` round trip
    per execute)."""
    folder = resources.files(__package__).joinpath("lua")
    prelude = folder.joinpath(f"{PRELUDE}.lua").read_text()
    return prelude + "\n" + folder.joinpath(f"{name}.lua").read_text()
