"""Non-blocking retry topics (R4): the chain, the recoverer that moves a record along it,
the topics it needs, and the consumer of the retry topics."""

from redrive.topics.chain import RetryTopics
from redrive.topics.create import ensure_topics
from redrive.topics.hop import retry_listener
from redrive.topics.recoverer import ChainRecoverer

__all__ = ["ChainRecoverer", "RetryTopics", "ensure_topics", "retry_listener"]
