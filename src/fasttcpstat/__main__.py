"""`python -m fasttcpstat`: the fasttcpstat command (see _cli).

A Ctrl-C while the command starts ends it with status 130 and no
traceback, as with the console script (_fasttcpstat_launch): runpy imports
the package first (fasttcpstat/__init__.py sees to that import), then
this module, whose own imports are inside the try.  Nothing is imported
above it, so that no import of ours runs outside it.
"""

if __name__ == "__main__":
    try:
        from ._cli import main

        status = main()
    except (KeyboardInterrupt, RuntimeError) as error:
        # A RuntimeError caused by the interrupt: as _fasttcpstat_launch.interrupted.
        if not isinstance(error, KeyboardInterrupt) \
                and not isinstance(error.__cause__, KeyboardInterrupt):
            raise
        status = 130  # 128 + SIGINT: the shell's status for Ctrl-C
    raise SystemExit(status)
