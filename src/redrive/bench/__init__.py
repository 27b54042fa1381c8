"""``redrive bench``: redrive's overhead against the raw client and its Python peers, and
the throughput of I/O-bound handlers with ``concurrency``. See ``harness.run``."""
