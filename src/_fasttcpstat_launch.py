"""The `fasttcpstat` console script's entry point, outside the package.

Importing anything from the package runs fasttcpstat/__init__.py first,
which loads the C extension and most modules: tens of milliseconds in
which a Ctrl-C would end in a KeyboardInterrupt traceback.  From here,
the whole import is inside the try.  (The interpreter's own start-up and
the script's `import re`, before this runs, can still be interrupted with
a traceback; this module imports nothing at its top to add no more.)
"""


def interrupted(error: BaseException) -> bool:
    """Whether `error` is a Ctrl-C: a KeyboardInterrupt, or the RuntimeError
    that Python < 3.12 raises in its place when it interrupts a class
    body's __set_name__ calls (a dataclass field being set up at import)."""
    return isinstance(error, KeyboardInterrupt) or (
        isinstance(error, RuntimeError) and isinstance(error.__cause__, KeyboardInterrupt))


def main() -> int:
    try:
        from fasttcpstat._cli import main as run

        return run()
    except (KeyboardInterrupt, RuntimeError) as error:
        if not interrupted(error):
            raise
        return 130  # 128 + SIGINT: the shell's status for Ctrl-C
