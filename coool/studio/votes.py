"""Blind A/B sessions and votes in SQLite (stdlib sqlite3; one connection per call, thread-safe)."""

from __future__ import annotations

import csv
import hashlib
import io
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CHOICES = ("A", "B", "tie")
TIE = "tie"
CSV_HEADER = ("video", "shown_as_A", "shown_as_B", "choice", "winner", "timestamp")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id      INTEGER PRIMARY KEY,
    key_lo  TEXT NOT NULL,
    key_hi  TEXT NOT NULL,
    seed    TEXT NOT NULL,
    created TEXT NOT NULL,
    UNIQUE (key_lo, key_hi)
);
CREATE TABLE IF NOT EXISTS votes (
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    video      INTEGER NOT NULL,
    shown_a    TEXT NOT NULL,
    shown_b    TEXT NOT NULL,
    choice     TEXT NOT NULL CHECK (choice IN ('A', 'B', 'tie')),
    winner     TEXT NOT NULL,
    ts         TEXT NOT NULL,
    PRIMARY KEY (session_id, video)
);
"""


@dataclass(frozen=True)
class Session:
    id: int
    key_lo: str  # the pair, sorted: a session belongs to the unordered pair
    key_hi: str
    seed: str
    created: str

    def sides(self, video: int) -> tuple[str, str]:
        """(key shown as A, key shown as B): a coin flip fixed by the session's seed and the video."""
        flip = hashlib.sha256(f"{self.seed}:{video}".encode()).digest()[0] & 1
        return (self.key_hi, self.key_lo) if flip else (self.key_lo, self.key_hi)


@dataclass(frozen=True)
class Vote:
    video: int
    shown_a: str
    shown_b: str
    choice: str
    winner: str
    ts: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class VoteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as con:
            con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=10)
        con.row_factory = sqlite3.Row
        return con

    def _run(self, sql: str, args: Iterable[object] = ()) -> list[sqlite3.Row]:
        with closing(self._connect()) as con, con:  # commit on success, close always
            return con.execute(sql, tuple(args)).fetchall()

    def session_for(self, key_x: str, key_y: str) -> Session:
        """The pair's session, created on first use; reopening the pair (either order) resumes it."""
        if key_x == key_y:
            raise ValueError("an A/B session needs two different submissions")
        lo, hi = sorted((key_x, key_y))
        self._run(
            "INSERT OR IGNORE INTO sessions (key_lo, key_hi, seed, created) VALUES (?, ?, ?, ?)",
            (lo, hi, secrets.token_hex(16), _now()),
        )
        row = self._run("SELECT * FROM sessions WHERE key_lo = ? AND key_hi = ?", (lo, hi))[0]
        return Session(**dict(row))

    def session(self, session_id: int) -> Session | None:
        rows = self._run("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return Session(**dict(rows[0])) if rows else None

    def sessions(self) -> list[Session]:
        return [Session(**dict(r)) for r in self._run("SELECT * FROM sessions ORDER BY id")]

    def vote(self, session: Session, video: int, choice: str) -> Vote:
        """Record (or replace) the vote on one video; the sides come from the session, never the client."""
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        shown_a, shown_b = session.sides(video)
        winner = {"A": shown_a, "B": shown_b}.get(choice, TIE)
        vote = Vote(video, shown_a, shown_b, choice, winner, _now())
        self._run(
            "INSERT OR REPLACE INTO votes (session_id, video, shown_a, shown_b, choice, winner, ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (session.id, video, shown_a, shown_b, choice, winner, vote.ts),
        )
        return vote

    def votes(self, session: Session) -> dict[int, Vote]:
        rows = self._run(
            "SELECT video, shown_a, shown_b, choice, winner, ts FROM votes WHERE session_id = ? ORDER BY video",
            (session.id,),
        )
        return {r["video"]: Vote(**dict(r)) for r in rows}

    def counts(self) -> dict[int, int]:
        """Votes per session id (for the session list)."""
        return {r[0]: r[1] for r in self._run("SELECT session_id, COUNT(*) FROM votes GROUP BY session_id")}


def tally(session: Session, votes: dict[int, Vote]) -> dict[str, int]:
    """Wins per submission key, and ties."""
    out = {session.key_lo: 0, session.key_hi: 0, TIE: 0}
    for vote in votes.values():
        out[vote.winner] = out.get(vote.winner, 0) + 1
    return out


# What a spreadsheet reads as the start of a formula (OWASP's list for CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """A text cell that starts like a formula, prefixed with ``'`` so a spreadsheet shows
    it as text; numbers are data and pass unchanged (a -1 stays -1)."""
    if isinstance(cell, str) and cell.startswith(_FORMULA_START):
        return "'" + cell
    return cell


def votes_csv(votes: dict[int, Vote]) -> str:
    """The votes of a session, for a spreadsheet: the submission keys are file names a
    user chose (``=HYPERLINK(...).csv``), so every text cell is made formula-safe."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for v in _sorted(votes):
        writer.writerow([spreadsheet_safe(c) for c in (v.video, v.shown_a, v.shown_b, v.choice, v.winner, v.ts)])
    return buf.getvalue()


def _sorted(votes: dict[int, Vote]) -> Iterator[Vote]:
    return (votes[k] for k in sorted(votes))
