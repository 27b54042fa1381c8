"""Non-blocking retry topics (R4): the chain, its headers, and the hop between topics."""

from redrive.topics.chain import RetryTopics
from redrive.topics.hop import ChainRecoverer, ensure_topics, retry_listener

__all__ = ["ChainRecoverer", "RetryTopics", "ensure_topics", "retry_listener"]
