"""Why the C extension is missing, in words a user can act on.

Without a compiler, `pip install` still succeeds (the extension is
optional, see setup.py) and `from . import _fasttcpstat` then fails with
Python's guess, "most likely due to a circular import", which sends the
reader the wrong way.
"""
from __future__ import annotations

import importlib.util

FIX = ("to fix: install a C compiler and the Python headers (e.g. apt install gcc "
       "python3-dev, or dnf install gcc python3-devel) and reinstall; "
       "`pip install -v fasttcpstat` shows why the build failed")


def import_error(exc: ImportError) -> ImportError:
    """`exc`, from importing fasttcpstat._fasttcpstat, as what happened
    and how to fix it."""
    try:
        built = importlib.util.find_spec("fasttcpstat._fasttcpstat") is not None
    except (ImportError, ValueError):
        built = False
    if not built:
        return ImportError(f"the C extension was not built when fasttcpstat was "
                           f"installed; {FIX}")
    # Built but not loadable (another Python's build, a missing symbol).
    return ImportError(f"the C extension does not load ({exc}); {FIX}")


def missing_warning(error: ImportError) -> str:
    """The warning `import fasttcpstat` gives without the extension."""
    return (f"fasttcpstat's C extension is not available: {error}; until then, "
            "counting goes through /proc/net/tcp, several times slower")
