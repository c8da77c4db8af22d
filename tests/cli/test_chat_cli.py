"""`z1 chat` as a user runs it: help, --list, --export, one-line errors, and a kill -9
in the middle of a reply."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from z1mlx import locations
from z1mlx.chat.history import History, StoredMessage

from helpers import one_line_error, wait_for, z1

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`


def stored_conversation(title="What is 2**10?") -> int:
    history = History(locations.history_db())
    cid = history.new_conversation(model="tiny")
    history.add_message(cid, StoredMessage("user", title))
    history.add_message(
        cid,
        StoredMessage(
            "assistant",
            "Final Answer: 1024",
            thinking="Final Answer: 1024",
            thinking_tokens=6,
            budget=64,
            finish_reason="stop",
        ),
    )
    history.close()
    return cid


def test_help_has_worked_examples(home):
    proc = z1("chat", "--help")
    assert proc.returncode == 0
    for text in (
        "examples:",
        "z1 chat --resume",
        "z1 chat --list",
        "z1 chat --export 12",
        "--plain",
        "--budget",
        "--answer-tokens",
        "--temp",
        "--system",
        "--model",
        "--adapter",
        "Ctrl+S",
    ):
        assert text in proc.stdout, text


def test_list_and_export(home, tmp_path):
    assert "no conversations yet" in z1("chat", "--list").stderr
    cid = stored_conversation()
    listed = z1("chat", "--list")
    assert listed.returncode == 0 and f"{cid}" in listed.stdout and "What is 2**10?" in listed.stdout
    exported = z1("chat", "--export", str(cid))
    assert exported.returncode == 0 and exported.stdout.startswith("# What is 2**10?")
    assert "Final Answer: 1024" in exported.stdout
    out = tmp_path / "chat.md"
    assert z1("chat", "--export", str(cid), "--out", out).returncode == 0
    assert out.read_text() == exported.stdout


def test_where(home):
    proc = z1("chat", "--where")
    assert proc.returncode == 0 and str(locations.history_db()) in proc.stdout


def test_bad_input_is_one_line_and_exit_2(home, tmp_path):
    cid = stored_conversation()
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (("chat", "--export", "999"), "no conversation 999"),
        (("chat", "--resume", "999", "--plain"), "no conversation 999"),
        (("chat", "--export", str(cid), "--out", blocker / "x" / "chat.md"), "cannot write"),
        (("chat", "--out", "x.md"), "--out goes with --export"),
        (("chat", "--budget", "40000"), "at most 32768"),
        (("chat", "--budget", "-1"), "whole number >= 0"),
        (("chat", "--temp", "hot"), "must be a number"),
        (("chat", "--export", "abc"), "conversation id"),
    ]
    for args, message in cases:
        proc = z1(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in one_line_error(proc), (args, proc.stderr)


def test_resume_without_id_needs_a_conversation(home):
    proc = z1("chat", "--resume", "--plain")
    assert proc.returncode == 2 and "no conversation to resume" in one_line_error(proc)


def test_piped_chat_uses_the_plain_repl_and_the_store(tiny_model, home):
    proc = z1(
        "chat",
        "--model",
        tiny_model,
        "--budget",
        "8",
        "--answer-tokens",
        "4",
        "--system",
        "Be brief.",
        input="first question\nsecond question\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("[z1] thinking 8/8 · answer 4") == 2
    history = History(locations.history_db())
    (info,) = history.conversations()
    assert info.system == "Be brief." and info.message_count == 4
    proc = z1("chat", "--model", tiny_model, "--resume", input="third\n")
    assert proc.returncode == 0, proc.stderr
    assert history.load(info.id).info.message_count == 6


def test_kill_9_during_a_reply_keeps_earlier_messages_and_the_partial_reply(endless_model, home, tmp_path):
    """The reply's row is flushed while it streams, so a killed process loses at most the last second."""
    out = open(tmp_path / "out.txt", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx", "chat", "--plain", "--model", str(endless_model), "--answer-tokens", "4"],
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ),
    )
    try:
        proc.stdin.write("/budget 16\nfirst question\n/budget 32768\nsecond question\n")
        proc.stdin.flush()
        db_path = locations.history_db()
        wait_for(db_path.exists, what="the history file")
        db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5)

        def partial_reply():
            try:
                rows = db.execute("SELECT role, thinking_tokens, complete FROM messages ORDER BY id").fetchall()
            except sqlite3.OperationalError:  # the file exists; its schema is being created
                return None
            return rows[3] if len(rows) == 4 and rows[3][1] > 0 else None

        wait_for(partial_reply, timeout=60, what="a flushed partial reply")
        first_flush = partial_reply()[1]
        wait_for(lambda: partial_reply()[1] > first_flush, timeout=10, what="a second flush")
        seen = partial_reply()[1]
        time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        db.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()

    history = History(locations.history_db())
    (info,) = history.conversations()
    messages = history.load(info.id).messages
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[0].content == "first question" and messages[2].content == "second question"
    first, partial = messages[1], messages[3]
    assert first.complete and first.thinking_tokens == 16 and first.answer_tokens == 4 and first.hint
    assert not partial.complete and partial.finish_reason is None
    assert partial.thinking_tokens >= seen and partial.content == partial.thinking and partial.thinking
    # The killed reply can still be resumed and exported.
    assert "*(reply interrupted)*" in history.export_markdown(info.id)
