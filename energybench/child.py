"""Entry point of a run's own process: ``python -m energybench.child SPEC.json RESULT.json``.

The parent (the runner) writes the spec, reads the result and appends it;
the child never touches results.jsonl. Progress lines go to stdout, which
the parent relays. A child killed outright leaves no result file, and the
parent records the run as failed with what it printed last.
"""

from __future__ import annotations

import json
import os
import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    spec_path, result_path = argv
    warnings.filterwarnings("ignore", category=FutureWarning)
    from energybench.execute import execute
    from energybench.plan import RunSpec

    spec = RunSpec.model_validate_json(open(spec_path, encoding="utf-8").read())
    result = execute(spec, log=lambda msg: print(msg, flush=True))
    tmp = result_path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(result.model_dump(mode="json")))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
