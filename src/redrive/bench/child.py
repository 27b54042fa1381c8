"""One contender in its own process: ``python -m redrive.bench.child '<job as JSON>'``.

Prints one line of JSON with the measured window (see ``contenders.Meter``).
"""

from __future__ import annotations

import json
import logging
import sys

from redrive.bench.contenders import CONTENDERS, Job, Meter


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING)
    job = Job(**json.loads(argv[0]))
    meter = Meter(job.records)
    meter.sample()
    CONTENDERS[job.contender][0](job, meter)
    print(json.dumps(meter.result()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
