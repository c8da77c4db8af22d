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


class History:
    """The history database. Safe to share between the UI thread and a generation thread."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else locations.history_db()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except (OSError, sqlite3.Error) as err:
            raise Z1Error(f"cannot open the chat history at {self.path}: {err}") from err
        self._lock = threading.RLock()
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process (the WAL is written before a commit
        # returns); only a power loss can drop the last commits.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > len(_MIGRATIONS):
                raise Z1Error(f"{self.path}: written by a newer z1-mlx (schema {version})")
            for number in range(version, len(_MIGRATIONS)):
                self._db.executescript(f"BEGIN; {_MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Writing

    def new_conversation(self, model: str = "", system: str | None = None, title: str = "") -> int:
        now = time.time()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO conversations (title, model, system, created, updated) VALUES (?, ?, ?, ?, ?)",
                (title, model, system, now, now),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

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

    def delete_message(self, message_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM messages WHERE id = ?", (message_id,))

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
