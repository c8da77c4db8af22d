"""Which part of a reply is the answer, and the code in it.

When the window shifts, the split is exact: phase-2 text is the answer. When the model
ends inside the window there is no tag to split on (Z1 has none), so `split_reply`
marks the answer as, in order of preference:
1. the text from the last final-answer heading ("Final Answer", "**Answer:**",
   "### Solution", "The final answer is", "In summary", ...) to the end;
2. otherwise the last fenced code block, from the paragraph that introduces it;
3. otherwise the whole text (reasoning is then empty).
"""

import ast
import re
from collections.abc import Sequence

_KEYWORD = (
    r"(?:final[ \t]+answer|final[ \t]+solution|final[ \t]+code|answer|solution|in[ \t]+summary|to[ \t]+summarize)"
)
_HEADING = re.compile(
    # A heading shape only: "### Solution", "**Final Answer**", "Answer:", or a sentence
    # that announces it ("The final answer is ..."); never a code line like `answer = []`.
    r"^[ \t]*(?:"
    rf"#{{1,6}}[ \t]*{_KEYWORD}\b"
    rf"|\*\*[ \t]*{_KEYWORD}\b"
    rf"|{_KEYWORD}[ \t]*\**[ \t]*:"
    r"|(?:therefore,?[ \t]+)?the[ \t]+final[ \t]+answer[ \t]+is\b"
    r")",
    re.IGNORECASE | re.MULTILINE,
)
_FENCE = re.compile(r"^[ \t]*```[^\n]*\n.*?^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)
_CODE_BLOCK = re.compile(r"^[ \t]*```([\w+-]*)[^\n]*\n(.*?)^[ \t]*```[ \t]*$", re.DOTALL | re.MULTILINE)


def split_reply(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a reply that ended inside the window."""
    fenced = [(m.start(), m.end()) for m in _FENCE.finditer(text)]
    headings = [h for h in _HEADING.finditer(text) if not any(a <= h.start() < b for a, b in fenced)]
    if headings:
        start = headings[-1].start()
        return text[:start].rstrip(), text[start:].strip()
    fences = list(_FENCE.finditer(text))
    if fences:
        start = fences[-1].start()
        # Keep the sentence that introduces the block with it.
        before = text[:start].rstrip()
        paragraph = before.rfind("\n\n")
        lead = paragraph + 2 if paragraph != -1 else 0
        if start - lead > 400:  # a long paragraph is reasoning, not a lead-in
            lead = start
        return text[:lead].rstrip(), text[lead:].strip()
    return "", text.strip()


def extract_code(text: str, prefer: str = "python", defines: Sequence[str] = ()) -> str | None:
    """The solution's code block: among blocks tagged `prefer` (or untagged), the last one
    that defines one of `defines` (the problem's entry points), else the last one. A usage
    example after the solution is then not taken for it."""
    blocks = [(lang.lower(), body) for lang, body in _CODE_BLOCK.findall(text)]
    if not blocks:
        # An answer cut off by its token cap may have an unclosed fence.
        open_fence = re.search(r"```([\w+-]*)[^\n]*\n(.*)\Z", text, re.DOTALL)
        return open_fence.group(2).rstrip() + "\n" if open_fence else None
    candidates = [body for lang, body in blocks if lang in (prefer, "py", "")] or [body for _, body in blocks]
    defining = [body for body in candidates if defines and defined_names(body) & set(defines)]
    return (defining or candidates)[-1]


def defined_names(code: str) -> set[str]:
    """Top-level functions, classes and assigned names of `code` (by pattern if it does not parse)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set(re.findall(r"^(?:async[ \t]+)?(?:def|class)[ \t]+(\w+)", code, re.MULTILINE))
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def reasoning_and_answer(
    thinking_text: str, answer_text: str, window_hit: bool, stopped: bool = False
) -> tuple[str, str]:
    """The reply's two parts: exact when the window shifted, else marked by `split_reply`.
    A reply stopped while thinking has no answer yet: all of it is reasoning."""
    if window_hit:
        return thinking_text, answer_text
    if stopped:
        return thinking_text, ""
    return split_reply(thinking_text)
