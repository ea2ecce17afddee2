"""TCP state names and the validation of counts()'s arguments."""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Iterable, Optional, Sequence, Tuple

#: The 11 TCP states in the kernel's order (include/net/tcp_states.h):
#: STATES[i] is kernel state number i + 1.
STATES: Tuple[str, ...] = (
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
)

FAMILIES: Tuple[str, ...] = ("ipv4", "ipv6")

# Bit masks shared with the C extension (csrc/diag.h).
FAMILY_IPV4 = 1
FAMILY_IPV6 = 2
FAMILY_BOTH = FAMILY_IPV4 | FAMILY_IPV6
ALL_STATES_MASK = 0xFFE  # bits 1..11

_STATE_NUMBER = {name: number for number, name in enumerate(STATES, start=1)}


def parse_family(family: "Optional[str]") -> int:
    """Turn counts()'s `family` argument into a FAMILY_* mask."""
    if family is None:
        return FAMILY_BOTH
    if not isinstance(family, str):
        raise TypeError(
            f"family must be None, 'ipv4' or 'ipv6', not {type(family).__name__}"
        )
    key = family.lower()
    if key == "ipv4":
        return FAMILY_IPV4
    if key == "ipv6":
        return FAMILY_IPV6
    raise ValueError(f"family must be None, 'ipv4' or 'ipv6', not {family!r}")


def parse_states(states: "Optional[Iterable[str]]") -> "Tuple[str, ...]":
    """Turn counts()'s `states` argument into state names in kernel order.

    Names are case-insensitive and may use '-' for '_' (as ss spells them);
    a single string is one name, not an iterable of letters.
    """
    if states is None:
        return STATES
    if isinstance(states, str):
        states = (states,)
    try:
        items = list(states)
    except TypeError:
        raise TypeError(
            "states must be None or an iterable of state names, "
            f"not {type(states).__name__}"
        ) from None
    wanted = set()
    for item in items:
        if not isinstance(item, str):
            raise TypeError(
                f"states must contain state names (str), not {type(item).__name__}"
            )
        name = item.upper().replace("-", "_")
        if name not in _STATE_NUMBER:
            raise ValueError(
                f"states: unknown TCP state {item!r}; allowed: {', '.join(STATES)}"
            )
        wanted.add(name)
    return tuple(name for name in STATES if name in wanted)


def states_mask(names: "Tuple[str, ...]") -> int:
    """The kernel's idiag_states bit mask for these state names."""
    mask = 0
    for name in names:
        mask |= 1 << _STATE_NUMBER[name]
    return mask


def masked(tally: "Sequence[int]", mask: int) -> "Tuple[int, ...]":
    """Zero the states outside `mask`, as the kernel's own state filter
    does for netlink, so that every backend returns the same tallies."""
    return tuple(n if mask & (1 << i) else 0 for i, n in enumerate(tally))


def shape_result(
    per_family: "Tuple[Sequence[int], Sequence[int]]",
    families: int,
    names: "Tuple[str, ...]",
) -> "Dict[str, int]":
    """Sum the wanted families' tallies (indexed by kernel state number)
    into {name: count} for `names`, in kernel order."""
    v4, v6 = per_family
    use4 = bool(families & FAMILY_IPV4)
    use6 = bool(families & FAMILY_IPV6)
    result: "Dict[str, int]" = {}
    for name in names:
        number = _STATE_NUMBER[name]
        result[name] = (v4[number] if use4 else 0) + (v6[number] if use6 else 0)
    return result
