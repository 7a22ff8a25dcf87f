"""What crossed the wire: a Grid wrapper that records every message of a FedProxy run."""

from __future__ import annotations

from collections.abc import Iterable

from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid


def describe(content: RecordDict) -> dict:
    """Names, kinds and dtypes of everything in a message (for the privacy/IP audit)."""
    out = {}
    for name, rec in content.items():
        if isinstance(rec, ArrayRecord):
            out[name] = {"type": "arrays", "keys": sorted(rec.keys()), "dtypes": sorted({a.dtype for a in rec.values()}),
                         "bytes": sum(len(a.data) for a in rec.values())}
        elif isinstance(rec, MetricRecord):
            out[name] = {"type": "metrics", "keys": sorted(rec.keys())}
        else:
            out[name] = {"type": "config", "keys": sorted(rec.keys()), "bytes": sum(map(_nbytes, rec.values()))}
    return out


def _nbytes(value) -> int:
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, list):
        return sum(map(_nbytes, value))
    return 8


class AuditGrid:
    """Delegates to a Flower Grid and appends one record per message sent or received.

    Wrapping the Grid (rather than logging at each call site) also covers messages sent
    by Flower's own workflows, such as the four SecAgg+ stages.
    """

    def __init__(self, grid: Grid, records: list[dict]) -> None:
        self._grid, self.records, self.round = grid, records, 0
        self.bytes_from: dict[int, int] = {}  # node id -> payload bytes received since the last reset

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> list[Message]:
        msgs = list(messages)
        self.records += [{"round": self.round, "direction": "server->client", "type": m.metadata.message_type,
                          "node": m.metadata.dst_node_id, "content": describe(m.content)} for m in msgs]
        replies = list(self._grid.send_and_receive(msgs, timeout=timeout))
        for r in replies:
            content = {} if r.has_error() else describe(r.content)
            self.records.append({"round": self.round, "direction": "client->server", "error": r.has_error(),
                                 "node": r.metadata.src_node_id, "content": content})
            sent = sum(rec.get("bytes", 0) for rec in content.values())
            self.bytes_from[r.metadata.src_node_id] = self.bytes_from.get(r.metadata.src_node_id, 0) + sent
        return replies

    def __getattr__(self, name: str):
        return getattr(self._grid, name)
