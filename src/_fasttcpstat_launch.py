"""The `fasttcpstat` console script's entry point, outside the package.

Importing anything from the package runs fasttcpstat/__init__.py first,
which loads the C extension and most modules: tens of milliseconds in
which a Ctrl-C would end in a KeyboardInterrupt traceback.  From here,
the whole import is inside the try.  (The interpreter's own start-up,
before this module runs, can still be interrupted with a traceback.)
"""
import signal


def main() -> int:
    try:
        from fasttcpstat._cli import main as run

        return run()
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
