"""Port filter arguments: validation and normalisation to merged ranges."""
from __future__ import annotations

# typing costs milliseconds at import: annotations only (see __init__.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, List, Optional, Sequence, Tuple, Union

    # None means "no filter": every signature taking a PortSpec defaults to it.
    PortSpec = Union[int, Tuple[int, int], range,
                     Iterable[Union[int, Tuple[int, int], range]], None]
    Range = Tuple[int, int]
else:
    PortSpec = Range = object  # importable names for annotations elsewhere

_HELP = "a port (0..65535), a (low, high) tuple, a range(), or a list of those"


def _check_port(value: object, name: str) -> int:
    # bool is an int subclass; True is not a port.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected {_HELP}, got {type(value).__name__}")
    if not 0 <= value <= 65535:
        raise ValueError(f"{name}: port {value} is not within 0..65535")
    return value


def _one(item: object, name: str) -> "Range":
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ValueError(
                f"{name}: a range is a (low, high) tuple, got {len(item)} items"
            )
        low, high = (_check_port(v, name) for v in item)
        if low > high:
            raise ValueError(f"{name}: range ({low}, {high}) has low > high "
                             "(a range is (low, high) with low <= high)")
        return low, high
    if isinstance(item, range):
        if item.step != 1 or len(item) == 0:
            raise ValueError(f"{name}: a range() must have step 1 and not be empty")
        low, high = _check_port(item.start, name), _check_port(item.stop - 1, name)
        return low, high
    port = _check_port(item, name)
    return port, port


def parse_ports(spec: object, name: str) -> "Optional[List[Range]]":
    """Turn a port filter argument into sorted, merged inclusive ranges.

    Returns None when the filter lets every port through (None, or ranges
    that cover 0..65535).
    """
    if spec is None:
        return None
    if isinstance(spec, (int, tuple, range)) and not isinstance(spec, bool):
        items: "List[object]" = [spec]
    elif isinstance(spec, (str, bytes)) or not hasattr(spec, "__iter__"):
        raise TypeError(f"{name}: expected {_HELP}, got {type(spec).__name__}")
    else:
        items = list(spec)
        if not items:
            raise ValueError(f"{name}: no ports given; pass None for no filter")
    ranges = sorted(_one(item, name) for item in items)
    merged: "List[Range]" = []
    for low, high in ranges:
        if merged and low <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    if merged == [(0, 65535)]:
        return None
    return merged


def parse_port_list(ports: object, name: str, limit: int) -> "Tuple[int, ...]":
    """The ports of a per-port breakdown: distinct single ports, in order."""
    if isinstance(ports, (int, bool)) or isinstance(ports, (str, bytes)):
        items: "List[object]" = [ports]
    elif not hasattr(ports, "__iter__"):
        raise TypeError(f"{name}: expected a list of ports, got {type(ports).__name__}")
    else:
        items = list(ports)
    result: "List[int]" = []
    seen = set()
    for item in items:
        port = _check_port(item, name)
        if port not in seen:
            seen.add(port)
            result.append(port)
    if not result:
        raise ValueError(f"{name}: no ports given")
    if len(result) > limit:
        raise ValueError(f"{name}: at most {limit} ports, got {len(result)}")
    return tuple(result)


def matches(port: int, ranges: "Optional[Sequence[Range]]") -> bool:
    """Whether a port passes a parsed filter (for the /proc backend)."""
    if ranges is None:
        return True
    return any(low <= port <= high for low, high in ranges)
