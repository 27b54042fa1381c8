"""Non-blocking retry topics (R4): the chain, the recoverer that moves a record along it,
and the consumer of the retry topics; the topics a listener needs at start-up."""

from redrive.topics.chain import RetryTopics
from redrive.topics.create import MissingTopics, TopicWatch, Waiting, ensure_topics, wanted_topics
from redrive.topics.hop import retry_listener
from redrive.topics.recoverer import ChainRecoverer

__all__ = [
    "ChainRecoverer",
    "MissingTopics",
    "RetryTopics",
    "TopicWatch",
    "Waiting",
    "ensure_topics",
    "retry_listener",
    "wanted_topics",
]
