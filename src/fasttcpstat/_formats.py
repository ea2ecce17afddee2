"""Renderings of a sample (see _report): JSON, a text table, and the
Prometheus text exposition format.

Standard library only: `fasttcpstat --format prometheus` and --textfile
must work without prometheus_client, which only --serve needs.
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Dict, List, Optional, Tuple

from ._report import DETAIL_LABELS, NETNS_LABELS, Labels, Series

# The labels that key a JSON object: the side is the same for every series
# of a sample (the --side the user gave), and a namespace is keyed by its
# inode alone.
_JSON_KEYS = ("family", "port", "netns", "cgroup")
# With these, the table has one row per series (there can be many).
_ROW_LABELS = ("netns", "cgroup")

# Prometheus naming (prometheus.io/docs/practices/naming): an application
# prefix, the plural of what is counted, no unit suffix for a count, no
# _total on a gauge.
METRIC = "fasttcpstat_connections"
HELP = ("TCP sockets per state, as ss -tan counts them "
        "(handshakes in progress count as syn_recv).")
# With --all-netns, whether each namespace walks the host's socket table
# (the cost of its count grows with the host's sockets): a 0/1 gauge per
# namespace, so sum() is the number of namespaces that share it.
TABLE_METRIC = "fasttcpstat_netns_shares_host_table"
TABLE_HELP = ("1 if the network namespace shares the host's TCP socket hash "
              "table (counting it walks every socket of the host), 0 if it "
              "has its own (net.ipv4.tcp_child_ehash_entries).")


def shares_host_table(series: Series) -> List[Tuple[Labels, int]]:
    """(the namespace's exported labels, 1 or 0) for each --all-netns
    series whose table is known; none for other samples."""
    found = []
    for labels, _ in series:
        values = dict(labels)
        table = values.get("table")
        if table in ("host", "shared", "own"):  # the host's table is its own
            exported = tuple((name, values[name]) for name in NETNS_LABELS)
            found.append((exported, 1 if table == "shared" else 0))
    return found


def state_label(state: str) -> str:
    """node_exporter's spelling of a state (its node_tcp_connection_states
    uses the kernel names in lower case), so dashboards and alerts written
    for it carry over."""
    return state.lower()


def timestamp(when: datetime.datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z: '2025-11-25T21:05:00.123Z'."""
    utc = when.astimezone(datetime.timezone.utc)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- JSON ------------------------------------------------------------------


def _json_key(labels: Labels) -> List[str]:
    return [value for name, value in labels if name in _JSON_KEYS]


def as_json_object(series: Series) -> Dict[str, Any]:
    """Nest the series by their labels: {state: n} for a plain count,
    {family: {...}}, {port: {...}}, {family: {port: {...}}}, {inode: {...}}
    or {cgroup: {...}}."""
    if len(series) == 1 and not series[0][0]:
        return dict(series[0][1])
    root: Dict[str, Any] = {}
    for labels, counts in series:
        node = root
        *parents, leaf = _json_key(labels)
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = dict(counts)
    return root


def render_json(series: Series, when: Optional[datetime.datetime] = None) -> str:
    """One line of JSON.  With `when` (interval mode), a "time" key comes
    first; the rest is exactly the one-shot object."""
    obj = as_json_object(series)
    if when is not None:
        obj = {"time": timestamp(when), **obj}
    return json.dumps(obj) + "\n"


# ---- table -----------------------------------------------------------------


def _column_title(labels: Labels) -> str:
    values = dict(labels)
    parts = []
    if "family" in values:
        parts.append(values["family"])
    if "port" in values:
        parts.append(f"{values['side']}:{values['port']}")
    return " ".join(parts) or "COUNT"


def _states_down(series: Series) -> List[List[str]]:
    titles = [_column_title(labels) for labels, _ in series]
    states = list(series[0][1]) if series else []
    rows = [["STATE", *titles]]
    for state in states:
        rows.append([state, *(str(counts[state]) for _, counts in series)])
    rows.append(["TOTAL", *(str(sum(counts.values())) for _, counts in series)])
    return rows


_ROW_TITLES = {"netns_name": "NAME", "container_id": "CONTAINER", "pod_uid": "POD"}


def _series_down(series: Series) -> Tuple[List[List[str]], int]:
    # Columns: every label (the identity labels only where one series has
    # a value), the states, the total.
    names = [name for name, _ in series[0][0]]
    shown = [name for name in names if name in _ROW_LABELS
             or any(dict(labels)[name] for labels, _ in series)]
    states = list(series[0][1])
    rows = [[_ROW_TITLES.get(name, name.upper()) for name in shown] + states + ["TOTAL"]]
    for labels, counts in series:
        values = dict(labels)
        rows.append([values[name] or "-" for name in shown]
                    + [str(counts[state]) for state in states]
                    + [str(sum(counts.values()))])
    return rows, len(shown)


def render_table(series: Series, when: Optional[datetime.datetime] = None) -> str:
    """States down, one column per series, a TOTAL row; or, per namespace
    or cgroup, one row per series with the states across and a TOTAL
    column.  With `when`, a time line above (interval mode) and a blank
    line below."""
    per_row = bool(series) and any(name in _ROW_LABELS for name, _ in series[0][0])
    rows, left = _series_down(series) if per_row else (_states_down(series), 1)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    # Names left, numbers right.
    lines = [
        "  ".join([cell.ljust(w) for cell, w in zip(row[:left], widths[:left])]
                  + [cell.rjust(w) for cell, w in zip(row[left:], widths[left:])])
        for row in rows
    ]
    if when is not None:
        lines = [timestamp(when), *lines, ""]
    return "\n".join(lines) + "\n"


# ---- Prometheus ------------------------------------------------------------


def _escape(value: str) -> str:
    # The exposition format's label value escapes.
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _sample(metric: str, labels: Labels, value: int) -> str:
    # Only what identifies a series, and only where it is known.
    text = ",".join(f'{name}="{_escape(v)}"' for name, v in labels
                    if v and name not in DETAIL_LABELS)
    return f"{metric}{{{text}}} {value}"


def render_prometheus(series: Series) -> str:
    """The text exposition format (version 0.0.4): HELP and TYPE, then one
    sample per series and state, zeros included, without timestamps (the
    textfile collector refuses files that carry them).  With --all-netns,
    then TABLE_METRIC, one sample per namespace whose table is known."""
    lines = [f"# HELP {METRIC} {HELP}", f"# TYPE {METRIC} gauge"]
    for labels, counts in series:
        for state, n in counts.items():
            lines.append(_sample(METRIC, (*labels, ("state", state_label(state))), n))
    tables = shares_host_table(series)
    if tables:
        lines += [f"# HELP {TABLE_METRIC} {TABLE_HELP}", f"# TYPE {TABLE_METRIC} gauge"]
        lines += [_sample(TABLE_METRIC, labels, shared) for labels, shared in tables]
    return "\n".join(lines) + "\n"

