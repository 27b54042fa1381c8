"""`redrive chaos`: nothing lost, every duplicate explained, under killed consumers and a
restarted broker, proven by an independent ledger.

``plan`` (what a run does), ``app`` (the consumer processes' App), ``ledger`` (one line per
handling), ``run`` (the driver: broker, records, consumers, faults), ``verdict`` (the
comparison and the duplicate rule), ``report`` (terminal, JSON and HTML), ``cli``.
"""

from redrive.chaos.plan import MODES, Plan

__all__ = ["MODES", "Plan"]
