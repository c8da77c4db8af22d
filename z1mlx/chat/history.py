"""Chat history in SQLite: every conversation and message, written as it happens.

WAL mode lets a second process read while a reply streams, and makes each commit an
append to the log (cheap enough to flush a partial reply once a second). A reply's
row is created when it starts (`complete = 0`) and updated in place, so a crash or
`kill -9` leaves the earlier messages and the reply as far as the last flush.
The schema is versioned with `PRAGMA user_version`; `_MIGRATIONS[i]` upgrades i -> i+1.
"""

import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .. import locations
from ..answer import reasoning_and_answer
from ..errors import Z1Error
from ..fsutil import atomic_write_text

_MIGRATIONS = [
    """
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        title TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        system TEXT,
        created REAL NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
        role TEXT NOT NULL,
        content TEXT NOT NULL,          -- what the model sees on the next turn
        thinking TEXT NOT NULL DEFAULT '',
        hint TEXT,                      -- set when the window shifted
        answer TEXT NOT NULL DEFAULT '',
        thinking_tokens INTEGER NOT NULL DEFAULT 0,
        answer_tokens INTEGER NOT NULL DEFAULT 0,
        budget INTEGER,
        finish_reason TEXT,             -- stop / length / cancelled; NULL while streaming
        complete INTEGER NOT NULL DEFAULT 1,
        ttft_s REAL,
        tokens_per_s REAL,
        created REAL NOT NULL
    );
    CREATE INDEX messages_by_conversation ON messages(conversation_id, id);
    """,
    # 2: why the window shifted (budget / answer_now), so a reopened reply says so.
    "ALTER TABLE messages ADD COLUMN shift_reason TEXT",
]


@dataclass
class StoredMessage:
    role: str
    content: str
    id: int | None = None
    thinking: str = ""
    hint: str | None = None
    answer: str = ""
    thinking_tokens: int = 0
    answer_tokens: int = 0
    budget: int | None = None
    finish_reason: str | None = None
    complete: bool = True
    ttft_s: float | None = None
    tokens_per_s: float | None = None
    shift_reason: str | None = None

    @property
    def reasoning_and_answer(self) -> tuple[str, str]:
        """The reply's two parts, as shown: exact when the window shifted, else found by `split_reply`."""
        return reasoning_and_answer(
            self.thinking,
            self.answer,
            self.hint is not None,
            stopped=self.finish_reason == "cancelled" or not self.complete,
        )


@dataclass
class ConversationInfo:
    id: int
    title: str
    model: str
    system: str | None
    created: float
    updated: float
    message_count: int = 0


@dataclass
class StoredConversation:
    info: ConversationInfo
    messages: list[StoredMessage] = field(default_factory=list)


def title_from(text: str, width: int = 60) -> str:
    """A conversation's title: its first user message, on one line."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


BUSY_TIMEOUT_MS = 5000


def history_error(path: Path, err: sqlite3.Error) -> Z1Error:
    """A database error as one line that names the file and what to do."""
    text = str(err)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        what = "is locked by another program; close the other z1 chat (or whatever holds it) and try again"
    elif "full" in lowered or ("disk i/o error" in lowered and _disk_nearly_full(path)):
        what = "cannot be written: the disk is full; free some space and try again"
    elif "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        what = f"cannot be written ({text}); make {path.parent} writable, or set Z1MLX_HOME to a writable directory"
    elif "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        what = (
            f"is damaged ({text}); `z1 chat --repair` moves it aside (it is kept) and starts a fresh one, "
            "or restore it from a backup"
        )
    else:
        what = f"failed: {text}"
    return Z1Error(f"{path}: the chat history {what}")


def _disk_nearly_full(path: Path) -> bool:
    """SQLite reports a full disk as an I/O error when it cannot even map its -shm file."""
    import shutil

    try:
        return shutil.disk_usage(path.parent).free < 256 * 1024
    except OSError:
        return False


def _guarded(method):
    """Turn sqlite3 errors inside a History method into one-line Z1Errors."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as err:
            self._abandon()  # a failed write leaves no open transaction behind, so the next one can start
            raise history_error(self.path, err) from err

    return wrapper


def repair(path: Path | None = None) -> Path | None:
    """Move a damaged history aside (kept, with its -wal/-shm) so a fresh one can start; returns where
    it went, or None when the database reads fine (nothing is moved)."""
    path = Path(path) if path else locations.history_db()
    if not path.exists():
        return None
    try:
        probe = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
        try:
            ok = probe.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            probe.close()
    except sqlite3.DatabaseError:
        ok = False
    if ok:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    try:
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(path) + suffix)
            if part.exists():
                part.rename(Path(str(aside) + suffix))
    except OSError as err:
        raise Z1Error(f"{path}: cannot move the damaged history aside: {err.strerror or err}") from err
    return aside


class History:
    """The history database. Safe to share between the UI thread and a generation thread."""

    def __init__(self, path: Path | None = None, read_only: bool = False):
        self.path = Path(path) if path else locations.history_db()
        self.read_only = read_only
        self._lock = threading.RLock()
        try:
            if read_only:
                self._db = self._open_read_only()
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if not read_only:
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable against a killed process (the WAL is written before a commit
                # returns); only a power loss can drop the last commits.
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except OSError as err:
            raise Z1Error(f"cannot open the chat history at {self.path}: {err.strerror or err}") from err
        except sqlite3.Error as err:
            raise history_error(self.path, err) from err

    def _abandon(self) -> None:
        with self._lock:
            try:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _open_read_only(self) -> sqlite3.Connection:
        """Reading needs no space and no write access (`--list` and `--export` on a full disk or
        a read-only directory); a missing file reads as an empty history."""
        if not self.path.exists():
            return sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
        uri = f"file:{quote(str(self.path))}?mode=ro"
        db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA user_version").fetchone()
        except sqlite3.OperationalError:
            # A WAL database with no -shm file next to it cannot be opened read-only where that
            # file cannot be created (a read-only directory, a full disk): read the file as it
            # stands, which is the whole history when no other program is writing it.
            db.close()
            db = sqlite3.connect(f"{uri}&immutable=1", uri=True, check_same_thread=False, isolation_level=None)
        return db

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise Z1Error(f"{self.path}: written by a newer z1-mlx (schema {version})")
            if self.read_only:
                if version < len(_MIGRATIONS):  # empty or older: read it through an upgraded copy in memory
                    memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
                    self._db.backup(memory)
                    self._db.close()
                    self._db = memory
                    self._db.row_factory = sqlite3.Row
                else:
                    return
            for number in range(version, len(_MIGRATIONS)):
                self._db.executescript(f"BEGIN; {_MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Writing

    @_guarded
    def new_conversation(self, model: str = "", system: str | None = None, title: str = "") -> int:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO conversations (title, model, system, created, updated) VALUES (?, ?, ?, ?, ?)",
                (title, model, system, now, now),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    @_guarded
    def add_message(self, conversation_id: int, message: StoredMessage) -> int:
        """Insert `message` and set its id; the first user message names the conversation."""
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            cursor = self._db.execute(
                "INSERT INTO messages (conversation_id, role, content, thinking, hint, answer, thinking_tokens,"
                " answer_tokens, budget, finish_reason, complete, ttft_s, tokens_per_s, shift_reason, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conversation_id, *self._columns(message), now),
            )
            if message.role == "user":
                self._db.execute(
                    "UPDATE conversations SET title = ? WHERE id = ? AND title = ''",
                    (title_from(message.content), conversation_id),
                )
            self._db.execute("UPDATE conversations SET updated = ? WHERE id = ?", (now, conversation_id))
            self._db.execute("COMMIT")
        assert cursor.lastrowid is not None
        message.id = cursor.lastrowid
        return message.id

    @_guarded
    def update_message(self, message: StoredMessage) -> None:
        """Rewrite a message in place (a streaming reply, flushed or finished)."""
        with self._lock:
            self._db.execute(
                "UPDATE messages SET role = ?, content = ?, thinking = ?, hint = ?, answer = ?, thinking_tokens = ?,"
                " answer_tokens = ?, budget = ?, finish_reason = ?, complete = ?, ttft_s = ?, tokens_per_s = ?,"
                " shift_reason = ?"
                " WHERE id = ?",
                (*self._columns(message), message.id),
            )
            if message.complete:  # a reply that finishes moves its conversation up the list
                self._db.execute(
                    "UPDATE conversations SET updated = ? "
                    "WHERE id = (SELECT conversation_id FROM messages WHERE id = ?)",
                    (time.time(), message.id),
                )

    @_guarded
    def delete_message(self, message_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

    @_guarded
    def delete_conversation(self, conversation_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    @staticmethod
    def _columns(m: StoredMessage) -> tuple:
        return (
            m.role,
            m.content,
            m.thinking,
            m.hint,
            m.answer,
            m.thinking_tokens,
            m.answer_tokens,
            m.budget,
            m.finish_reason,
            int(m.complete),
            m.ttft_s,
            m.tokens_per_s,
            m.shift_reason,
        )

    # Reading

    @_guarded
    def conversations(self, limit: int | None = None) -> list[ConversationInfo]:
        """Most recently updated first; empty conversations are left out."""
        sql = (
            "SELECT c.*, COUNT(m.id) AS message_count FROM conversations c JOIN messages m"
            " ON m.conversation_id = c.id GROUP BY c.id ORDER BY c.updated DESC, c.id DESC"
        )
        with self._lock:
            rows = self._db.execute(sql + (f" LIMIT {int(limit)}" if limit else "")).fetchall()
        return [self._info(row) for row in rows]

    def latest(self) -> ConversationInfo | None:
        found = self.conversations(limit=1)
        return found[0] if found else None

    @_guarded
    def load(self, conversation_id: int) -> StoredConversation:
        with self._lock:
            row = self._db.execute(
                "SELECT c.*, (SELECT COUNT(*) FROM messages WHERE conversation_id = c.id) AS message_count"
                " FROM conversations c WHERE c.id = ?",
                (conversation_id,),
            ).fetchone()
            if row is None:
                raise Z1Error(f"no conversation {conversation_id} in the history (see `z1 chat --list`)")
            rows = self._db.execute(
                "SELECT * FROM messages WHERE conversation_id = ? ORDER BY id", (conversation_id,)
            ).fetchall()
        messages = [
            StoredMessage(
                role=r["role"],
                content=r["content"],
                id=r["id"],
                thinking=r["thinking"],
                hint=r["hint"],
                answer=r["answer"],
                thinking_tokens=r["thinking_tokens"],
                answer_tokens=r["answer_tokens"],
                budget=r["budget"],
                finish_reason=r["finish_reason"],
                complete=bool(r["complete"]),
                ttft_s=r["ttft_s"],
                tokens_per_s=r["tokens_per_s"],
                shift_reason=r["shift_reason"],
            )
            for r in rows
        ]
        return StoredConversation(self._info(row), messages)

    @staticmethod
    def _info(row) -> ConversationInfo:
        return ConversationInfo(
            row["id"], row["title"], row["model"], row["system"], row["created"], row["updated"], row["message_count"]
        )

    # Export

    def export_markdown(self, conversation_id: int) -> str:
        return to_markdown(self.load(conversation_id))

    def export_to(self, conversation_id: int, path: Path) -> None:
        atomic_write_text(Path(path), self.export_markdown(conversation_id))  # errors are one line


def to_markdown(conversation: StoredConversation) -> str:
    """A conversation as Markdown: reasoning in collapsible <details>, answers as written."""
    info = conversation.info
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created))
    lines = [f"# {info.title or f'Conversation {info.id}'}", "", f"*{when} · {info.model or 'unknown model'}*", ""]
    if info.system:
        lines += [f"> **System:** {info.system}", ""]
    for message in conversation.messages:
        if message.role == "user":
            lines += ["## User", "", message.content, ""]
            continue
        reasoning, answer = message.reasoning_and_answer
        lines += ["## Z1", ""]
        if reasoning:
            lines += [
                f"<details><summary>Reasoning ({message.thinking_tokens} tokens)</summary>",
                "",
                reasoning,
                "",
                "</details>",
                "",
            ]
        if message.hint is not None:
            lines += [f"*{message.hint.strip()}*", ""]
        lines += [answer or "*(no answer)*", ""]
        if not message.complete or message.finish_reason == "cancelled":
            lines += ["*(reply interrupted)*", ""]
    return "\n".join(lines).rstrip() + "\n"
