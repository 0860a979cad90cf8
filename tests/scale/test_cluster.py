"""The Redis Cluster fixture (tests/cluster.py) is a real 3-primary cluster: keys of one
hash tag share a slot and one Lua script may touch them; keys of different slots in one
script are refused with CROSSSLOT, which is why every key of a lead must carry its tag.

Reference: https://redis.io/docs/latest/operate/oss_and_stack/reference/cluster-spec/
(hash tags, "-CROSSSLOT Keys in request don't hash to the same slot").
"""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from tests.cluster import ClusterProcess, cluster_state_ok

SCRIPT = """
redis.call('HSET', KEYS[1], 'state', ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return redis.call('ZCARD', KEYS[2])
"""


def test_three_primaries_share_all_slots(redis_cluster: ClusterProcess) -> None:
    assert cluster_state_ok(redis_cluster.ports)
    client = redis_cluster.client()
    try:
        primaries = client.get_primaries()
        assert sorted(node.port for node in primaries) == sorted(redis_cluster.ports)
        slots = client.cluster_slots()
        assert sum(end - start + 1 for start, end in slots) == 16384
    finally:
        client.close()


def test_a_script_on_keys_of_one_hash_tag_runs(redis_cluster: ClusterProcess) -> None:
    client = redis_cluster.client()
    try:
        keys = ["nurture:{lead-1}:lead", "nurture:{lead-1}:sched"]
        assert client.keyslot(keys[0]) == client.keyslot(keys[1])
        assert client.register_script(SCRIPT)(keys=keys, args=["a", 1]) == 1
        assert client.register_script(SCRIPT)(keys=keys, args=["b", 2]) == 2
        assert client.hget(keys[0], "state") == b"b"
    finally:
        client.close()


def test_a_script_on_keys_of_different_slots_is_refused(redis_cluster: ClusterProcess) -> None:
    client = redis_cluster.client()
    try:
        keys = ["nurture:lead:lead-1", "nurture:sched"]
        assert client.keyslot(keys[0]) != client.keyslot(keys[1])
        with pytest.raises(redis.exceptions.RedisClusterException, match="same key slot"):
            client.register_script(SCRIPT)(keys=keys, args=["a", 1])
        # redis-py refuses before sending; the server refuses too (-CROSSSLOT ...).
        node = redis_cluster.node_client(client.get_node_from_key(keys[0]).port)
        with pytest.raises(redis.ResponseError, match="don't hash to the same slot"):
            node.eval(SCRIPT, 2, *keys, "a", 1)
        node.close()
    finally:
        client.close()


def test_keys_spread_over_every_primary(redis_cluster: ClusterProcess) -> None:
    client: RedisCluster = redis_cluster.client()
    try:
        for i in range(300):
            client.set(f"nurture:{{lead-{i}}}:lead", "x")
        counts = []
        for port in redis_cluster.ports:
            node = redis_cluster.node_client(port)
            counts.append(node.dbsize())
            node.close()
        assert sum(counts) == 300
        assert min(counts) > 50  # about a third each
    finally:
        client.close()


def test_a_transaction_on_one_hash_tag_commits_and_across_slots_is_refused(
    redis_cluster: ClusterProcess,
) -> None:
    """MULTI/EXEC (what ``Store`` uses besides scripts) works on a cluster too, within
    one slot: redis-py refuses a transaction spanning slots before sending it."""
    client = redis_cluster.client()
    try:
        pipe = client.pipeline(transaction=True)
        pipe.hset("nurture:{b7}:L:lead-1", "e:seq", "1|a|first")
        pipe.zadd("nurture:{b7}:S", {"seq|1|first|lead-1": 100})
        assert pipe.execute() == [1, 1]
        assert client.zscore("nurture:{b7}:S", "seq|1|first|lead-1") == 100
        pipe = client.pipeline(transaction=True)
        pipe.hset("nurture:lead:lead-1", "e:seq", "x")
        pipe.zadd("nurture:sched", {"m": 1})
        with pytest.raises(redis.exceptions.RedisClusterException):
            pipe.execute()
        assert not client.exists("nurture:lead:lead-1")
    finally:
        client.close()
