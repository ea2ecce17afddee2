"""`python -m fasttcpstat`: print the TCP state counts as one JSON object."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

from ._counter import counts


def main(argv: Optional[List[str]] = None) -> int:
    del argv  # the full command line comes later; this prints the report
    json.dump(counts(), sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
