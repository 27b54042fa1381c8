"""Share groups (KIP-932, Queues for Kafka): ``App.share_listener`` and its settings.

``ShareGroup`` holds the group settings a share listener writes at start; the loop is in
``redrive.share.loop``; every call into confluent-kafka's preview ``ShareConsumer`` is in
``redrive.share.client``.
"""

from redrive.share.group import ShareGroup

__all__ = ["ShareGroup"]
