"""The ingest spool: an optional append-only JSONL file of the records not yet settled, so
a crash (``kill -9``, a power-cut of the process) loses none, and none is sent twice.

One line per event, flushed to the OS as it is written (a crash of the process loses no
line written; a torn last line is skipped when read back)::

    {"add": "<id>", "record": {...}}   # a record handed to the ingest queue
    {"done": "<id>"}                    # that record settled (exported, or refused by Pay-i)

On the next start (:meth:`Spool.open`) the records added and never settled are the ones to
send again, each once; the file is rewritten (to a temporary file, then renamed over it) with
only those, so it does not grow across runs - nor within one: when the next line would take
the file past ``max_bytes``, it is rewritten the same way from the records still unsettled
(kept in memory as their lines, as the queue keeps the records). One process owns a spool at a
time (an exclusive ``flock`` on ``<path>.lock``); another gets none, with a WARNING. The file
is bounded: a record that would take even the rewritten file past ``max_bytes`` (half of it
unsettled) is not spooled (it is still sent from memory), with one WARNING. Records carry
Pay-i's ``provider_response_id``, which Pay-i's ingest API is given as the request's ``id``:
a record sent again after a crash in the middle of its first send is recognised by Pay-i as a
duplicate.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from typing import IO, Any, Dict, List, Optional, Tuple

from payi_otel._log import log_once, logger

__all__ = ["DEFAULT_MAX_BYTES", "Spool"]

#: The default bound of the spool file.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class Spool:
    """One process's spool file (:meth:`open` first)."""

    def __init__(self, path: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ValueError(f"spool must be a file path, got {path!r}")
        if not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"spool_max_bytes must be a positive int, got {max_bytes!r}")
        self.path = str(path)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._file: Optional[IO[str]] = None
        self._lock_file: Optional[IO[str]] = None
        self._size = 0
        #: The unsettled records' lines, by id (what a rewrite keeps), and their bytes.
        self._pending: Dict[str, str] = {}
        self._pending_bytes = 0

    def open(self) -> Optional[List[Tuple[str, Dict[str, Any]]]]:
        """Own the spool: the records left unsettled by an earlier run, in the order they
        were added; None when the spool cannot be used (another process owns it, or the file
        cannot be written: one WARNING, and records are kept in memory only)."""
        try:
            self._lock_file = open(self.path + ".lock", "a", encoding="utf-8")  # noqa: SIM115
            try:
                import fcntl

                fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
                pass
            pending = self._read()
            for record_id, record in pending:
                self._keep(record_id, _line({"add": record_id, "record": record}))
            self._rewrite()
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._size = os.path.getsize(self.path)
            return pending
        except OSError as error:
            logger.warning(
                "payi_otel: cannot use the ingest spool %s (%s); unsent records are kept in "
                "memory only",
                self.path,
                error,
            )
            self.close()
            return None

    def _read(self) -> List[Tuple[str, Dict[str, Any]]]:
        added: Dict[str, Dict[str, Any]] = {}
        try:
            with open(self.path, encoding="utf-8") as file:
                for line in file:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        continue  # a line torn by a crash
                    if not isinstance(entry, dict):
                        continue
                    if isinstance(entry.get("add"), str) and isinstance(entry.get("record"), dict):
                        added[entry["add"]] = entry["record"]
                    elif isinstance(entry.get("done"), str):
                        added.pop(entry["done"], None)
        except FileNotFoundError:
            pass
        return list(added.items())

    def _keep(self, record_id: str, line: str) -> None:
        self._pending[record_id] = line
        self._pending_bytes += len(line)

    def _rewrite(self) -> None:
        """The file made anew with the unsettled records' lines alone."""
        temporary = self.path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as file:
            file.writelines(self._pending.values())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def _compact(self) -> None:
        """Rewrite the open file with the unsettled records alone (under the lock)."""
        assert self._file is not None
        try:
            self._file.close()
            self._rewrite()
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
            self._size = self._pending_bytes
        except OSError as error:
            logger.warning(
                "payi_otel: cannot rewrite the ingest spool %s (%s); unsent records are kept "
                "in memory only",
                self.path,
                error,
            )
            self._file = None

    def add(self, record_id: str, record: Dict[str, Any]) -> bool:
        """Spool a record; False when it is not (the spool is not open, or full)."""
        line = _line({"add": record_id, "record": record})
        with self._lock:
            if self._file is None:
                return False
            if (
                self._size + len(line) > self.max_bytes
                and self._pending_bytes + len(line) <= self.max_bytes // 2
            ):
                self._compact()  # mostly settled records' lines: made room
                if self._file is None:
                    return False
            if self._size + len(line) > self.max_bytes:
                log_once(
                    f"spool-full:{self.path}",
                    "payi_otel: the ingest spool %s is full (%d bytes, spool_max_bytes); "
                    "records are kept in memory only until it is emptied",
                    self.path,
                    self.max_bytes,
                )
                return False
            if not self._write(line):
                return False
            self._keep(record_id, line)
            return True

    def done(self, record_id: str) -> None:
        """The record is settled: never sent again."""
        with self._lock:
            line = self._pending.pop(record_id, None)
            if line is not None:
                self._pending_bytes -= len(line)
            if self._file is not None:
                self._write(_line({"done": record_id}))

    def _write(self, line: str) -> bool:
        assert self._file is not None
        try:
            self._file.write(line)
            self._file.flush()
        except OSError as error:
            log_once(
                f"spool-write:{self.path}",
                "payi_otel: cannot write the ingest spool %s (%s)",
                self.path,
                error,
            )
            return False
        self._size += len(line)
        return True

    def release(self) -> None:
        """Let another owner take the spool now (its lock), while a send in flight may still
        write its ``done`` line: a new exporter on the same path (a configuration reload)
        replays that record too, which Pay-i recognises by its id if it was taken."""
        with self._lock:
            if self._lock_file is not None:
                with contextlib.suppress(OSError):
                    self._lock_file.close()
                self._lock_file = None

    def close(self) -> None:
        with self._lock:
            for file in (self._file, self._lock_file):
                if file is not None:
                    with contextlib.suppress(OSError):
                        file.close()
            self._file = self._lock_file = None


def _line(entry: Dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), default=str) + "\n"
