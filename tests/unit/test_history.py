"""The SQLite chat history: schema, writes, reads, export."""

import sqlite3

import pytest

from z1mlx.chat.history import History, StoredMessage, title_from
from z1mlx.errors import Z1Error


@pytest.fixture
def history(tmp_path):
    store = History(tmp_path / "h.sqlite3")
    yield store
    store.close()


def reply(**fields) -> StoredMessage:
    base = dict(
        role="assistant",
        content="think" + "\n\nHINT\n\n" + "42",
        thinking="think",
        hint="\n\nHINT\n\n",
        answer="42",
        thinking_tokens=5,
        answer_tokens=1,
        budget=5,
        finish_reason="length",
    )
    base.update(fields)
    return StoredMessage(**base)


def test_schema_is_versioned_and_in_wal_mode(history):
    db = sqlite3.connect(history.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    # Reopening migrates nothing twice.
    History(history.path).close()
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_version_1_history_is_upgraded_in_place(tmp_path):
    from z1mlx.chat.history import _MIGRATIONS

    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(f"BEGIN; {_MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    old.execute("INSERT INTO conversations (title, created, updated) VALUES ('t', 0, 0)")
    old.execute("INSERT INTO messages (conversation_id, role, content, created) VALUES (1, 'user', 'hi', 0)")
    old.commit()
    old.close()
    upgraded = History(path)
    assert [m.content for m in upgraded.load(1).messages] == ["hi"]
    assert upgraded.load(1).messages[0].shift_reason is None
    upgraded.close()


def test_newer_schema_is_a_one_line_error(tmp_path):
    path = tmp_path / "h.sqlite3"
    History(path).close()
    sqlite3.connect(path).execute("PRAGMA user_version = 99")
    with pytest.raises(Z1Error, match="newer z1-mlx"):
        History(path)


def test_messages_round_trip_with_parts_and_token_counts(history):
    cid = history.new_conversation(model="tiny", system="be brief")
    history.add_message(cid, StoredMessage("user", "What is 6*7?\nShow work."))
    history.add_message(cid, reply(ttft_s=0.1, tokens_per_s=50.0, shift_reason="answer_now"))
    stored = history.load(cid)
    assert stored.info.title == "What is 6*7? Show work."
    assert stored.info.system == "be brief" and stored.info.model == "tiny"
    user, answer = stored.messages
    assert user.role == "user" and user.content == "What is 6*7?\nShow work."
    assert (answer.thinking, answer.hint, answer.answer) == ("think", "\n\nHINT\n\n", "42")
    assert (answer.thinking_tokens, answer.answer_tokens, answer.budget) == (5, 1, 5)
    assert answer.finish_reason == "length" and answer.complete
    assert answer.ttft_s == 0.1 and answer.tokens_per_s == 50.0
    assert answer.shift_reason == "answer_now"


def test_streaming_reply_is_updated_in_place(history):
    cid = history.new_conversation()
    history.add_message(cid, StoredMessage("user", "hi"))
    partial = StoredMessage("assistant", "", complete=False)
    history.add_message(cid, partial)
    partial.thinking = partial.content = "thinking so far"
    partial.thinking_tokens = 3
    history.update_message(partial)
    # A second connection (another process) sees the flushed partial reply.
    row = (
        sqlite3.connect(history.path)
        .execute("SELECT content, complete, thinking_tokens FROM messages WHERE id = ?", (partial.id,))
        .fetchone()
    )
    assert row == ("thinking so far", 0, 3)


def test_list_newest_first_without_empty_conversations(history):
    first = history.new_conversation()
    history.add_message(first, StoredMessage("user", "first"))
    history.new_conversation()  # never got a message
    second = history.new_conversation()
    history.add_message(second, StoredMessage("user", "second"))
    assert [c.id for c in history.conversations()] == [second, first]
    assert history.latest().id == second
    assert history.conversations()[0].message_count == 1


def test_delete_message_and_conversation(history):
    cid = history.new_conversation()
    history.add_message(cid, StoredMessage("user", "q"))
    answer = history.add_message(cid, reply())
    history.delete_message(answer)
    assert [m.role for m in history.load(cid).messages] == ["user"]
    history.delete_conversation(cid)
    with pytest.raises(Z1Error, match="no conversation"):
        history.load(cid)


def test_unknown_conversation_is_a_one_line_error(history):
    with pytest.raises(Z1Error) as err:
        history.load(12345)
    assert "12345" in str(err.value) and "\n" not in str(err.value)


def test_markdown_export(history, tmp_path):
    cid = history.new_conversation(model="tiny", system="sys")
    history.add_message(cid, StoredMessage("user", "Write code"))
    history.add_message(cid, reply(answer="```python\nprint(1)\n```", content="x"))
    history.add_message(cid, StoredMessage("user", "Again"))
    history.add_message(
        cid,
        reply(
            hint=None, answer="", thinking="Let me see.\n\nFinal Answer: 7", finish_reason="cancelled", complete=False
        ),
    )
    text = history.export_markdown(cid)
    assert text.startswith("# Write code\n")
    assert "> **System:** sys" in text
    assert "<details><summary>Reasoning (5 tokens)</summary>" in text
    assert "*HINT*" in text and "```python\nprint(1)\n```" in text
    # Ended inside the window: the answer is found by its heading.
    assert "Final Answer: 7" in text and "*(reply interrupted)*" in text
    out = tmp_path / "chat.md"
    history.export_to(cid, out)
    assert out.read_text() == text


def test_export_to_unwritable_path_is_a_z1error(history, tmp_path):
    cid = history.new_conversation()
    history.add_message(cid, StoredMessage("user", "q"))
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Z1Error, match="cannot write|not writable"):
        history.export_to(cid, blocker / "sub" / "out.md")


def test_unopenable_history_is_a_z1error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Z1Error, match="cannot open the chat history"):
        History(blocker / "h.sqlite3")


def test_title_is_one_short_line():
    assert title_from("  a\n b  ") == "a b"
    assert len(title_from("x" * 200)) == 60 and title_from("x" * 200).endswith("…")
