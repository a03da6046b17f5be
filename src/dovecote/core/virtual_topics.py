"""Virtual topics (ActiveMQ's default ``Consumer.*.VirtualTopic.>`` naming).

A durable queue named ``Consumer.<name>.VirtualTopic.<rest>`` is also bound to the topic
``VirtualTopic.<rest>``: every such queue gets a copy of what is sent to the topic, and the
consumers of one queue share its copies (load-balanced subscribers, one queue per group). The
router keeps these queues in a trie of their own and adds them to the topic's subscription
queues when it routes.
"""

from __future__ import annotations

from dovecote.core.matching import is_valid_pattern

VIRTUAL_TOPIC_PREFIX = "VirtualTopic."


def virtual_topic_of(queue_name: str) -> str | None:
    """``VirtualTopic.Orders`` for a queue ``Consumer.A.VirtualTopic.Orders``; else None."""
    if not queue_name.startswith("Consumer."):
        return None
    parts = queue_name.split(".", 2)
    if len(parts) == 3 and parts[1] and parts[2].startswith(VIRTUAL_TOPIC_PREFIX):
        topic = parts[2]
        if len(topic) > len(VIRTUAL_TOPIC_PREFIX) and is_valid_pattern(topic):
            return topic
    return None
