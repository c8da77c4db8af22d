"""Marking the answer in a reply that ended inside the window, and extracting code."""

from z1mlx.answer import extract_code, reasoning_and_answer, split_reply


def test_last_final_answer_heading_wins():
    text = "Let me think.\nAnswer: maybe 3?\nWait, no.\n\n**Final Answer**\nThe sum is 5."
    reasoning, answer = split_reply(text)
    assert answer == "**Final Answer**\nThe sum is 5."
    assert reasoning == "Let me think.\nAnswer: maybe 3?\nWait, no."


def test_last_code_block_with_its_lead_in():
    text = (
        "First idea:\n```python\nx = 1\n```\nHmm, wrong.\n\nHere is the fix:\n```python\ndef f():\n    return 2\n```\n"
    )
    reasoning, answer = split_reply(text)
    assert answer.startswith("Here is the fix:") and answer.endswith("```")
    assert "First idea" in reasoning
    assert extract_code(answer) == "def f():\n    return 2\n"


def test_plain_text_is_all_answer():
    assert split_reply("Just 42.") == ("", "Just 42.")


def test_window_hit_split_is_exact():
    assert reasoning_and_answer("thinking...", "```python\nprint(1)\n```", True) == (
        "thinking...",
        "```python\nprint(1)\n```",
    )


def test_extract_prefers_python_over_other_languages():
    text = "```python\na = 1\n```\n```bash\nrun it\n```"
    assert extract_code(text) == "a = 1\n"


def test_extract_unclosed_fence_from_a_capped_answer():
    assert extract_code("Sure:\n```python\ndef g():\n    pass") == "def g():\n    pass\n"
    assert extract_code("no code here") is None


def test_code_lines_are_never_headings():
    text = (
        "Let me think about it.\n\nHere is the code:\n\n```python\ndef f(nums):\n    answer = []\n"
        "    # Solution\n    for x in nums:\n        answer.append(x)\n    return answer\n```"
    )
    reasoning, answer = split_reply(text)
    assert reasoning == "Let me think about it."
    assert answer.startswith("Here is the code:") and "answer = []" in answer
    assert extract_code(answer).startswith("def f(nums):")


def test_heading_shapes():
    assert split_reply("think\n\nAnswer: 5")[1] == "Answer: 5"
    assert split_reply("think\nThe final answer is 5.")[1] == "The final answer is 5."
    assert split_reply("hmm\nanswer = compute()\nok")[0] == ""


def test_a_reply_stopped_while_thinking_has_no_answer():
    assert reasoning_and_answer("Final Answer: half a thought", "", False, stopped=True) == (
        "Final Answer: half a thought",
        "",
    )
