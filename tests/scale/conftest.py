"""Fixtures of the scale-out tests: RabbitMQ vhosts and a Redis Cluster of their own."""

from tests.cluster import redis_cluster, redis_cluster_server
from tests.rabbitmq import amqp, amqp_vhost, app_queues, rabbitmq_node

__all__ = [
    "amqp",
    "amqp_vhost",
    "app_queues",
    "rabbitmq_node",
    "redis_cluster",
    "redis_cluster_server",
]
