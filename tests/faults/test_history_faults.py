"""The chat history under faults: a damaged file, a read-only directory, a lock held by
another program, a full disk. Each ends in one line that says what to do, and nothing a
user typed is lost.

The read-only directory and the full disk are real: a read-only bind mount and a 1 MB
tmpfs made by bubblewrap (the sandbox tool), so SQLite meets EROFS and ENOSPC itself."""

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from z1mlx import locations
from z1mlx.chat import history as history_module
from z1mlx.chat.conversation import Conversation
from z1mlx.chat.history import History, StoredMessage, repair
from z1mlx.errors import Z1Error
from z1mlx.window import WindowControl

from helpers import one_line_error, z1

BWRAP = shutil.which("bwrap")
needs_bwrap = pytest.mark.skipif(BWRAP is None, reason="bubblewrap (bwrap) is not installed")
PROGRAM = "x = 3\nprint(x)\n"  # two lines: two messages in the plain REPL


def stored_history(path: Path, count: int = 2) -> list[int]:
    history = History(path)
    ids = []
    for i in range(count):
        cid = history.new_conversation(model="demo")
        history.add_message(cid, StoredMessage("user", f"question {i}"))
        history.add_message(
            cid, StoredMessage("assistant", f"answer {i}", thinking=f"answer {i}", thinking_tokens=3, budget=8)
        )
        ids.append(cid)
    history.close()
    return ids


def in_bwrap(*binds: str, env: dict | None = None, script: str) -> subprocess.CompletedProcess:
    """`sh -c script` with the whole filesystem as it is, plus `binds` (bwrap arguments) on top."""
    sets = [a for k, v in (env or {}).items() for a in ("--setenv", k, v)]
    return subprocess.run(
        [BWRAP, "--dev-bind", "/", "/", *binds, *sets, "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
    )


def z1_line(*args: str) -> str:
    return " ".join([sys.executable, "-m", "z1mlx", *args])


# --- a damaged file ------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_history_is_one_line_and_repair_moves_it_aside(home, damage):
    path = locations.history_db()
    path.parent.mkdir(parents=True)
    if damage == "garbage":
        path.write_bytes(b"this is not a database\n" * 400)
    else:
        stored_history(path, count=40)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    before = path.read_bytes()
    for args in (("chat", "--list"), ("chat", "--export", "1"), ("chat", "--plain", "--model", "demo")):
        proc = z1(*args, input=PROGRAM)
        line = one_line_error(proc)
        assert proc.returncode == 2 and str(path) in line and "damaged" in line and "z1 chat --repair" in line, line
    assert path.read_bytes() == before  # nothing is moved or rewritten until the user asks

    repaired = z1("chat", "--repair")
    assert repaired.returncode == 0, repaired.stderr
    aside = [p for p in path.parent.iterdir() if re.fullmatch(r"history\.sqlite3\.damaged-[\d-]+", p.name)]
    assert len(aside) == 1 and aside[0].read_bytes() == before  # kept, byte for byte
    assert str(aside[0]) in repaired.stderr and not path.exists()

    chat = z1("chat", "--plain", "--model", "demo", "--budget", "16", input=PROGRAM)
    assert chat.returncode == 0 and "Traceback" not in chat.stderr, chat.stderr
    assert [m.content for m in History(path).load(1).messages if m.role == "user"] == ["x = 3", "print(x)"]


def test_repair_leaves_a_sound_history_alone(home):
    path = locations.history_db()
    path.parent.mkdir(parents=True)
    stored_history(path)
    assert repair(path) is None
    proc = z1("chat", "--repair")
    assert proc.returncode == 0 and "reads fine; nothing was moved" in proc.stderr
    assert [c.id for c in History(path).conversations()] == [2, 1]


# --- read-only directory -------------------------------------------------------------------


@needs_bwrap
def test_read_only_data_directory(home):
    data = locations.history_db().parent
    data.mkdir(parents=True)
    stored_history(locations.history_db())
    ro = ("--ro-bind", str(home), str(home))
    listed = in_bwrap(*ro, script=z1_line("chat", "--list"))
    assert listed.returncode == 0 and "question 1" in listed.stdout and "question 0" in listed.stdout, listed.stderr
    exported = in_bwrap(*ro, script=z1_line("chat", "--export", "1"))
    assert exported.returncode == 0 and "answer 0" in exported.stdout, exported.stderr

    chat = in_bwrap(*ro, script=f"printf 'x = 3\\n' | {z1_line('chat', '--plain', '--model', 'demo')}")
    line = one_line_error(chat)
    assert str(locations.history_db()) in line and "writable" in line and "Z1MLX_HOME" in line, line


# --- a full disk ---------------------------------------------------------------------------


def fill(mount: str = "/mnt/full") -> str:
    """Shell: fill the tmpfs at `mount` to the last byte."""
    return (
        f"(dd if=/dev/zero of={mount}/fill bs=1k 2>/dev/null; dd if=/dev/zero of={mount}/fill2 bs=1 2>/dev/null; true)"
    )


def on_full_disk(home: Path, command: str, fill_first: bool = True) -> str:
    """Shell: copy the store onto the 1 MB tmpfs, fill it, run `command`; then show how full it was."""
    steps = f"cp -r {home} /mnt/full/home && " + (f"{fill()} && " if fill_first else "")
    return f"{steps}{command}; code=$?; df -k /mnt/full | tail -n 1 >&2; exit $code"


TMPFS = ("--size", str(1024 * 1024), "--tmpfs", "/mnt/full")
CHAT = ("chat", "--plain", "--model", "demo", "--budget", "16")


@needs_bwrap
def test_full_disk_reading_works_and_a_new_chat_says_so(home, tmp_path):
    locations.history_db().parent.mkdir(parents=True)
    stored_history(locations.history_db())
    env = {"Z1MLX_HOME": "/mnt/full/home"}
    listed = in_bwrap(*TMPFS, env=env, script=on_full_disk(home, z1_line("chat", "--list")))
    assert listed.returncode == 0 and "question 1" in listed.stdout, listed.stderr
    assert " 100% " in listed.stderr.splitlines()[-1]  # the disk really was full
    exported = in_bwrap(*TMPFS, env=env, script=on_full_disk(home, z1_line("chat", "--export", "2")))
    assert exported.returncode == 0 and "answer 1" in exported.stdout, exported.stderr

    chat = in_bwrap(*TMPFS, env=env, script=on_full_disk(home, f"printf 'x = 3\\n' | {z1_line(*CHAT)}"))
    assert chat.returncode == 2 and "Traceback" not in chat.stderr, chat.stderr
    line = chat.stderr.splitlines()[0]
    assert "/mnt/full/home/data/history.sqlite3" in line and "the disk is full; free some space" in line, line


@needs_bwrap
def test_a_disk_that_fills_during_a_chat_keeps_the_conversation(home, tmp_path):
    locations.history_db().parent.mkdir(parents=True)
    stored_history(locations.history_db())
    recovered = tmp_path / "tmp"
    recovered.mkdir()
    env = {"Z1MLX_HOME": "/mnt/full/home", "TMPDIR": str(recovered)}
    # The disk fills once the chat has opened its history (its -shm file appears), before the
    # first message arrives: every write of the chat meets ENOSPC.
    typed = (
        "(until [ -e /mnt/full/home/data/history.sqlite3-shm ]; do sleep 0.05; done; "
        f"{fill()}; printf 'x = 3\\nprint(x)\\n')"
    )
    chat = in_bwrap(*TMPFS, env=env, script=on_full_disk(home, f"{typed} | {z1_line(*CHAT)}", fill_first=False))
    assert chat.returncode == 1 and "Traceback" not in chat.stderr, chat.stderr
    told = [line for line in chat.stderr.splitlines() if "disk is full" in line]
    assert len(told) == 1 and "/mnt/full/home/data/history.sqlite3" in told[0], chat.stderr  # told once
    files = list(recovered.glob("z1-chat-*.md"))  # the data directory is full too: the temporary one
    assert len(files) == 1 and str(files[0]) in told[0]
    text = files[0].read_text()
    assert "x = 3" in text and "print(x)" in text and text.count("## Z1") == 2  # both turns, both replies
    last = chat.stderr.splitlines()[-2]  # before the df line
    assert "not in the history" in last and str(files[0]) in last


# --- a lock held by another program ----------------------------------------------------------


def test_a_locked_history_waits_then_keeps_the_chat_and_stores_it_once_free(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(history_module, "BUSY_TIMEOUT_MS", 300)
    monkeypatch.setenv("Z1MLX_HOME", str(tmp_path / "home"))
    path = tmp_path / "h.sqlite3"
    history = History(path)
    told: list[str] = []
    chat = Conversation(engine, history, answer_tokens=4, on_storage_problem=told.append)
    list(chat.send("first question", WindowControl(4)))
    assert [c.message_count for c in history.conversations()] == [2]

    other = sqlite3.connect(path, isolation_level=None)  # another program holds the write lock
    other.execute("BEGIN EXCLUSIVE")
    with pytest.raises(Z1Error) as info:
        history.new_conversation()
    assert str(path) in str(info.value) and "locked by another program" in str(info.value)
    assert "\n" not in str(info.value)

    list(chat.send("second question", WindowControl(4)))
    list(chat.send("third question", WindowControl(4)))
    assert len(told) == 1 and "locked by another program" in told[0] and str(chat.recovery_file) in told[0]
    kept = chat.recovery_file.read_text()
    assert all(q in kept for q in ("first question", "second question", "third question"))
    assert chat.unsaved

    other.execute("ROLLBACK")
    other.close()
    list(chat.send("fourth question", WindowControl(4)))
    assert not chat.unsaved and "stored in the history again" in told[-1]
    latest = history.load(history.latest().id)
    assert [m.content for m in latest.messages if m.role == "user"] == [
        "first question",
        "second question",
        "third question",
        "fourth question",
    ]
    assert [t.content for t in chat.turns] == [m.content for m in latest.messages]
    assert chat.save_pending()


def test_a_lock_that_never_clears_ends_the_chat_non_zero_with_the_recovery_file(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(history_module, "BUSY_TIMEOUT_MS", 200)
    monkeypatch.setenv("Z1MLX_HOME", str(tmp_path / "home"))
    path = tmp_path / "h.sqlite3"
    history = History(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    told: list[str] = []
    chat = Conversation(engine, history, answer_tokens=4, on_storage_problem=told.append)
    list(chat.send("only question", WindowControl(4)))
    assert not chat.save_pending()
    assert len(told) == 2 and str(chat.recovery_file) in told[-1]
    assert chat.recovery_file.parent == tmp_path / "home" / "data" / "recovered"
    assert "only question" in chat.recovery_file.read_text()
    other.close()


def test_writes_never_leave_a_half_copy_when_the_retry_fails(engine, tmp_path, monkeypatch):
    """A retry that fails part-way removes what it wrote, so the history never shows a torn chat."""
    monkeypatch.setenv("Z1MLX_HOME", str(tmp_path / "home"))
    history = History(tmp_path / "h.sqlite3")
    chat = Conversation(engine, history, answer_tokens=4, on_storage_problem=lambda text: None)
    list(chat.send("one", WindowControl(4)))
    chat.unsaved = True  # as after a failed write
    real_add = history.add_message
    calls = {"n": 0}

    def flaky(conversation_id, message):
        calls["n"] += 1
        if calls["n"] == 2:
            raise Z1Error(f"{history.path}: the chat history cannot be written: the disk is full")
        return real_add(conversation_id, message)

    monkeypatch.setattr(history, "add_message", flaky)
    chat._retry_storage()
    assert chat.unsaved and [c.id for c in history.conversations()] == [1]  # only the first, whole
    monkeypatch.setattr(history, "add_message", real_add)
    assert chat.save_pending() and [c.message_count for c in history.conversations()][0] == 2


def test_history_errors_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "h.sqlite3"
    cases = {
        "database is locked": "close the other z1 chat",
        "database or disk is full": "free some space",
        "attempt to write a readonly database": "writable",
        "file is not a database": "z1 chat --repair",
        "database disk image is malformed": "restore it from a backup",
    }
    for message, fix in cases.items():
        text = str(history_module.history_error(path, sqlite3.OperationalError(message)))
        assert text.startswith(f"{path}: the chat history ") and fix in text and "\n" not in text, text


def test_read_only_history_of_an_older_schema_is_read_through_memory(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)  # a history written by the first schema
    db.executescript(f"BEGIN; {history_module._MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    db.execute("INSERT INTO conversations (id, title, created, updated) VALUES (1, 'old question', 1, 1)")
    db.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (1, 'user', 'old question', 1)")
    db.close()
    before = path.read_bytes()
    reader = History(path, read_only=True)
    assert [c.title for c in reader.conversations()] == ["old question"]
    assert [m.content for m in reader.load(1).messages] == ["old question"]
    reader.close()
    assert path.read_bytes() == before  # reading never upgrades the file
    assert History(tmp_path / "missing.sqlite3", read_only=True).conversations() == []
    assert not (tmp_path / "missing.sqlite3").exists()
