"""Renderings of a sample (see _report): JSON, a text table, and the
Prometheus text exposition format.

Standard library only: `fasttcpstat --format prometheus` and --textfile
must work without prometheus_client, which only --serve needs.
"""
from __future__ import annotations

import datetime
import json
from typing import Any, Dict, List, Optional

from ._report import Labels, Series

# Prometheus naming (prometheus.io/docs/practices/naming): an application
# prefix, the plural of what is counted, no unit suffix for a count, no
# _total on a gauge.
METRIC = "fasttcpstat_connections"
HELP = ("TCP sockets per state, as ss -tan counts them "
        "(handshakes in progress count as syn_recv).")


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
    # The side is not a key: it is the same for every series of a sample
    # (the --side the user gave), unlike family and port.
    return [value for name, value in labels if name != "side"]


def as_json_object(series: Series) -> Dict[str, Any]:
    """Nest the series by their labels: {state: n} for a plain count,
    {family: {...}}, {port: {...}} or {family: {port: {...}}}."""
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


def render_table(series: Series, when: Optional[datetime.datetime] = None) -> str:
    """States down, one column per series, a TOTAL row; with `when`, a
    time line above (interval mode) and a blank line below."""
    titles = [_column_title(labels) for labels, _ in series]
    states = list(series[0][1]) if series else []
    rows = [["STATE", *titles]]
    for state in states:
        rows.append([state, *(str(counts[state]) for _, counts in series)])
    rows.append(["TOTAL", *(str(sum(counts.values())) for _, counts in series)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join([row[0].ljust(widths[0])] + [cell.rjust(w) for cell, w in zip(row[1:], widths[1:])])
        for row in rows
    ]
    if when is not None:
        lines = [timestamp(when), *lines, ""]
    return "\n".join(lines) + "\n"


# ---- Prometheus ------------------------------------------------------------


def _escape(value: str) -> str:
    # The exposition format's label value escapes.
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_prometheus(series: Series) -> str:
    """The text exposition format (version 0.0.4): HELP and TYPE, then one
    sample per series and state, zeros included, without timestamps (the
    textfile collector refuses files that carry them)."""
    lines = [f"# HELP {METRIC} {HELP}", f"# TYPE {METRIC} gauge"]
    for labels, counts in series:
        for state, n in counts.items():
            pairs = (*labels, ("state", state_label(state)))
            text = ",".join(f'{name}="{_escape(value)}"' for name, value in pairs)
            lines.append(f"{METRIC}{{{text}}} {n}")
    return "\n".join(lines) + "\n"

