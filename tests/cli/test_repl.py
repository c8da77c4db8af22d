"""The plain REPL: driven through a pseudo-terminal (the real `z1 chat --plain`, Ctrl+C
as the terminal sends it) and through prompt-toolkit's pipe input."""

import io
import os
import re
import select
import struct
import subprocess
import sys
import time

import pytest
from rich.console import Console

from z1mlx import locations
from z1mlx.chat.conversation import Conversation
from z1mlx.chat.history import History
from z1mlx.chat.repl import Command, message_text, parse_budget, parse_command, run_repl
from z1mlx.chat.settings import load_settings
from z1mlx.errors import Z1Error

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`

ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[()][0-9A-B]|\x1b[=>]|\r")


class Terminal:
    """A child process on a pseudo-terminal that is its controlling terminal."""

    def __init__(self, args: list[str], env: dict):
        import fcntl
        import pty
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        # A session leader that opens its tty by name acquires it as the controlling
        # terminal: then Ctrl+C (\x03) becomes SIGINT, as for a user.
        boot = (
            "import os, sys; os.close(os.open(os.ttyname(0), os.O_RDWR)); "
            "from z1mlx.cli import main; sys.exit(main(sys.argv[1:]))"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", boot, *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        os.close(slave)
        self.raw = b""
        self.seen = 0  # expect() searches only output after the previous match

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.master, 65536)
            except OSError:  # the child closed the terminal
                time.sleep(timeout)

    def expect(self, pattern: str, timeout: float = 30.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.compile(pattern).search(self.text, self.seen)
            if match:
                self.seen = match.end()
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"{pattern!r} not seen; output after the last match:\n{self.text[self.seen :]}")
            self._read(0.05)

    def wait_for_more_output(self, chars: int, timeout: float = 30.0) -> None:
        start, deadline = len(self.text), time.monotonic() + timeout
        while len(self.text) < start + chars:
            if time.monotonic() > deadline:
                raise AssertionError("no output")
            self._read(0.05)

    def send(self, data: str) -> None:
        os.write(self.master, data.encode())

    def type(self, line: str) -> None:
        """Type at the prompt once it is up (keys typed earlier would meet a cooked terminal)."""
        self.expect(r"›")
        self.send(line)

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.05)
        return self.proc.wait(timeout=1)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


@pytest.fixture
def terminal_env(home):
    env = dict(os.environ, TERM="xterm-256color", PROMPT_TOOLKIT_NO_CPR="1", COLUMNS="120", LINES="40")
    env.pop("NO_COLOR", None)
    return env


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_repl_in_a_terminal_send_budget_ctrl_c_answer(endless_model, terminal_env, home):
    term = Terminal(
        ["chat", "--plain", "--model", str(endless_model), "--budget", "16", "--answer-tokens", "6"], terminal_env
    )
    try:
        term.expect(r"budget 16 · /help for commands")
        term.type("hello\r")
        term.expect(r"window full at 16 tokens · I overthought it")
        term.expect(r"\[z1\] thinking 16/16 · answer 6 · window hit")

        term.type("/budget 8\r")
        term.expect(r"budget: 8 tokens")
        term.type("line one\x1b\rline two\r")  # Alt+Enter: a new line in the same message
        term.expect(r"\[z1\] thinking 8/8 · answer 6")

        term.type("/budget 32768\r")
        term.expect(r"budget: 32768 tokens")
        term.type("think long\r")
        term.wait_for_more_output(300)  # reasoning is streaming
        term.send("\x03")  # Ctrl+C stops the reply, not the REPL
        stopped = term.expect(r"\[z1\] thinking (\d+)/32768 · answer 0")
        term.expect(r"stopped · /answer finishes it · Ctrl\+C again leaves")
        thought = int(stopped.group(1))
        assert thought > 0

        term.type("/answer\r")
        term.expect(rf"answer now at {thought} tokens · I overthought it")
        term.expect(rf"\[z1\] thinking {thought}/32768 · answer 6 · answered now")

        term.type("/nope\r")
        term.expect(r"error: unknown command /nope")
        term.type("\x03")  # at the prompt: once warns, twice leaves
        term.expect(r"\(Ctrl\+C again, Ctrl\+D or /quit leaves\)")
        term.type("\x03")
        assert term.wait() == 0
    finally:
        term.close()

    history = History(locations.history_db())
    (info,) = history.conversations()
    messages = history.load(info.id).messages
    assert [m.role for m in messages] == ["user", "assistant"] * 3
    assert messages[2].content == "line one\nline two"
    assert [m.budget for m in messages[1::2]] == [16, 8, 32768]
    assert [m.thinking_tokens for m in messages[1::2]] == [16, 8, thought]
    last = messages[-1]
    assert last.hint and last.answer_tokens == 6 and last.finish_reason == "length" and last.complete
    assert load_settings().budget == 32768  # /budget is remembered
    assert "hello" in locations.repl_history_file().read_text()  # persistent input history


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX")
def test_ctrl_c_stops_the_reply_and_a_second_one_leaves(endless_model, terminal_env, home):
    term = Terminal(["chat", "--plain", "--model", str(endless_model), "--budget", "32768"], terminal_env)
    try:
        term.type("think long\r")
        term.wait_for_more_output(300)
        term.send("\x03")
        term.expect(r"stopped · /answer finishes it")
        term.type("\x03")
        assert term.wait() == 0
        assert "Ctrl+C again, Ctrl+D or /quit leaves" not in term.text
    finally:
        term.close()
    messages = History(locations.history_db()).load(1).messages
    assert messages[0].content == "think long"
    assert messages[1].finish_reason == "cancelled" and messages[1].thinking_tokens > 0 and messages[1].complete


def pipe_session(conversation, keys: str, budget: int = 16):
    from prompt_toolkit.input import create_pipe_input
    from prompt_toolkit.output import DummyOutput

    out = io.StringIO()
    console = Console(file=out, width=100, force_terminal=False, color_system=None)
    with create_pipe_input() as pipe:
        pipe.send_text(keys)
        code = run_repl(conversation, budget, input=pipe, output=DummyOutput(), console=console)
    return code, out.getvalue()


def test_pipe_input_send_budget_history_export(engine, home, tmp_path):
    history = History(locations.history_db())
    conversation = Conversation(engine, history, answer_tokens=5)
    out_file = tmp_path / "chat.md"
    code, out = pipe_session(conversation, f"first\r/budget 0\rsecond\r/history\r/export {out_file}\r/new\r/quit\r")
    assert code == 0
    assert "[z1] thinking 16/16 · answer 5 · window hit" in out
    assert "budget: 0 tokens (answer at once)" in out
    assert "answer at once (budget 0)" in out and "[z1] thinking 0/0 · answer 5" in out
    assert re.search(r"#1\s+\S+ \S+\s+first\s+\(4 messages\)", out)
    assert f"wrote {out_file}" in out and out_file.read_text().startswith("# first")
    assert "new conversation" in out and conversation.turns == []


def test_pipe_input_answer_without_a_stopped_reply_and_bad_budget(engine, home):
    conversation = Conversation(engine, History(locations.history_db()))
    code, out = pipe_session(conversation, "/answer\r/budget lots\r/budget 40000\r/export\r/help\r\x04")
    assert code == 0  # Ctrl+D leaves
    assert "error: nothing to answer: /answer finishes a reply stopped (Ctrl+C) while thinking" in out
    assert "error: /budget needs a whole number of tokens, got 'lots'" in out
    assert "error: /budget must be between 0 and 32768, got 40000" in out
    assert "error: nothing to export yet" in out
    assert "/budget N" in out and "/history [ID]" in out


def test_history_command_reopens_a_conversation(engine, home):
    history = History(locations.history_db())
    first = Conversation(engine, history, answer_tokens=4)
    pipe_session(first, "remember this\r/quit\r", budget=8)
    again = Conversation(engine, history, answer_tokens=4)
    code, out = pipe_session(again, f"/history {first.id}\r/history 999\r/quit\r")
    assert f"reopened #{first.id}: remember this (2 messages)" in out
    assert "error: no conversation 999 in the history" in out
    assert again.id == first.id and len(again.turns) == 2


def test_reply_that_ends_inside_the_window_prints_its_answer(engine, home):
    from helpers import find_prompt

    prompt, reply = find_prompt(engine, ends_within=60)
    text = engine.tokenizer.decode(prompt)
    question = text.split("<|im_start|>user\n")[1].split("<|im_end|>")[0]
    conversation = Conversation(engine, History(locations.history_db()))
    code, out = pipe_session(conversation, f"{question}\r/quit\r", budget=100)
    assert "── answer ──" in out and f"[z1] thinking {len(reply)}/100 · answer 0" in out


def test_piped_lines_without_a_terminal(engine, home, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\n/budget 4\ntwo\n"))
    out = io.StringIO()
    conversation = Conversation(engine, History(locations.history_db()), answer_tokens=3)
    code = run_repl(conversation, 8, console=Console(file=out, width=100))
    assert code == 0
    assert "thinking 8/8" in out.getvalue() and "thinking 4/4" in out.getvalue()


def test_command_parsing():
    assert parse_command("hello") is None
    assert parse_command("  /budget  512 ") == Command("budget", "512")
    assert parse_command("/ANSWER") == Command("answer", "")
    assert parse_command("//etc/hosts is a file") is None
    assert message_text("//etc/hosts is a file") == "/etc/hosts is a file"
    assert parse_budget("2,048") == 2048 and parse_budget("0") == 0
    with pytest.raises(Z1Error):
        parse_budget("-1")
