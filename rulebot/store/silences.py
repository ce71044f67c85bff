"""Silences in the store (rulebot silence add|list|expire; the daemon reads
them every few seconds): a mixin of store.RelationStore, like store.shared.

Expiring a silence ends it now; expired silences stay listed (`--all`) for a
week after their end, as a record of who muted what, then are purged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from rulebot.model import Silence

SILENCES = "rulebot_silences"
#: Seconds an ended silence stays listed before it is purged.
KEEP_ENDED = 7 * 86400.0
_COLUMNS = "id, ends, author, comment, rule, sender, match, starts, created"


class SilenceMixin:
    NAMED = ":{}"

    def _query(self, sql: str, params: Sequence[object] = ()) -> Sequence[tuple[Any, ...]]:
        raise NotImplementedError

    def _call(self, what: str) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _purge(self, sql: str, params: Sequence[object] | Mapping[str, object]) -> int:
        raise NotImplementedError

    def silence_add(self, silence: Silence) -> None:
        """Store a new silence. Raises StoreError."""
        n = self.NAMED.format
        names = _COLUMNS.split(", ")
        with self._call("add a silence"):
            self._purge(f"INSERT INTO {SILENCES} ({_COLUMNS}) VALUES "
                        f"({', '.join(n(c) for c in names)})",
                        {c: getattr(silence, c) for c in names})

    def silences(self, now: float | None = None) -> list[Silence]:
        """The silences not ended at `now` (every one kept when None), by end."""
        n = self.NAMED.format
        where, params = (f" WHERE ends > {n('now')}", {"now": now}) if now is not None \
            else ("", {})
        with self._call("read the silences"):
            rows = self._query(f"SELECT {_COLUMNS} FROM {SILENCES}{where} ORDER BY ends, id",
                               params)  # type: ignore[arg-type]
        out = []
        for i, e, a, c, r, s, m, st, cr in rows:
            try:
                out.append(Silence(str(i), float(e), str(a), str(c), r, s, m, float(st),
                                   float(cr)))
            except (TypeError, ValueError):  # a row written by hand: skipped, not fatal
                continue
        return out

    def silence_expire(self, silence_id: str, now: float) -> bool:
        """End the silence now; False when there is no such silence still on."""
        n = self.NAMED.format
        with self._call("expire a silence"):
            return self._purge(f"UPDATE {SILENCES} SET ends = {n('now')} WHERE id = {n('id')} "
                               f"AND ends > {n('now')}", {"id": silence_id, "now": now}) > 0

    def purge_silences(self, now: float) -> int:
        """Forget silences that ended more than KEEP_ENDED ago."""
        n = self.NAMED.format
        with self._call("purge"):
            return self._purge(f"DELETE FROM {SILENCES} WHERE ends < {n('before')}",
                               {"before": now - KEEP_ENDED})
