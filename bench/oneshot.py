"""One count by one method in a fresh process (the whole-process runs).

    python bench/oneshot.py METHOD      # prints {state: n} as JSON

Start-up (interpreter, imports, socket set-up) is part of what is measured:
bench/measure.py runs this under bench/c/execwrap, which reports the
process's wall time, CPU and peak RSS.
"""
import json
import sys

from methods import oneshot_count

if __name__ == "__main__":
    print(json.dumps(oneshot_count(sys.argv[1])))
