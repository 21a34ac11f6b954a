"""Extracting the Python code from a model completion.

A completion is chat text, a fenced block, or bare code; for HumanEval it may also be the
body that continues the prompt's function. For example, an MBPP completion (the prompt ends
inside an opened ```python fence):

    def remove_Occ(s, ch):
        return s.strip(ch)
    ```
    This strips the character from both ends.

becomes `extract_code(completion, fence_open=True)` == "def remove_Occ(s, ch):\\n    return s.strip(ch)\\n".
"""

from __future__ import annotations

import ast
import re
import textwrap

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_LANG_TAG = re.compile(r"[ \t]*[A-Za-z0-9_+.-]+[ \t]*\n")
_PY_LANGS = ("", "python", "py", "python3", "py3")
_MARKERS = re.compile(r"^\s*\[(BEGIN|DONE)\]\s*$", re.M)


def extract_code(completion: str, *, fence_open: bool = False, entry_point: str | None = None) -> str:
    """The Python code in a model completion.

    fence_open: the prompt ended inside an opened ```python fence, so the completion starts
    with code and a closing ``` (if any) ends it. Otherwise the first fenced Python block is
    taken (the first defining `entry_point`, when given), else the whole text.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nDone.")
    'x = 1\\n'
    >>> extract_code("x = 1\\n```\\ntrailing prose", fence_open=True)
    'x = 1\\n'
    >>> extract_code("Here is the function:\\n```python\\nx = 1\\n```", fence_open=True)
    'x = 1\\n'
    """
    text = _MARKERS.sub("", completion.replace("\r\n", "\n"))
    if fence_open:
        head, fence, rest = text.partition("```")
        opens_own = bool(_LANG_TAG.match(rest))  # ```python: a fence of its own, not the close of ours
        if not fence or (head.strip() and not (opens_own and _is_prose(head))):
            return head  # code up to our fence's close (or to the end)
        if not head.strip() and not opens_own:
            text = rest  # the model closed our fence at once; look at what follows
        # else: an ordinary fenced completion (a chat model ignores the opened fence: prose, then ```python)
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text) if body.strip()]
    if not blocks:
        head, _, rest = text.partition("```")  # a lone fence: the code is on one side of it
        return head if head.strip() else rest
    python = [body for lang, body in blocks if lang in _PY_LANGS] or [body for _, body in blocks]
    if entry_point:
        for body in python:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", body, re.M):
                return body
    return python[0]


# What ast.parse raises for text that is not a Python module: a syntax error, a NUL byte (ValueError),
# nesting too deep for the parser (RecursionError, MemoryError). A completion's text is never a checker
# crash: whatever it holds is the program's fail, judged when it runs.
_UNPARSEABLE = (SyntaxError, ValueError, RecursionError, MemoryError)


def _is_prose(text: str) -> bool:
    """Text that is not Python (a chat model's "Here is the function:" before its fenced block)."""
    try:
        ast.parse(textwrap.dedent(text))
    except _UNPARSEABLE:
        return True
    return False


def _defines_function(code: str, name: str) -> bool:
    try:
        tree = ast.parse(code)
    except _UNPARSEABLE:  # a broken full function still counts as one (its error is the feedback)
        return re.search(rf"^def\s+{re.escape(name)}\s*\(", code, re.M) is not None
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name for n in tree.body)


def humaneval_solution(prompt: str, completion: str, entry_point: str) -> str:
    """The program a HumanEval completion stands for: a full function (defined after the prompt,
    so it replaces the prompt's stub but keeps its imports and helpers) or a body continuing it."""
    code = extract_code(completion, entry_point=entry_point)
    if _defines_function(code, entry_point):
        return prompt + "\n" + code
    first = next((line for line in code.splitlines() if line.strip()), "")
    if first and not first[0].isspace() and not first.startswith(("def ", "class ", "import ", "from ", "@")):
        code = textwrap.indent(code, "    ")  # an unindented body: put it inside the function
    return prompt + code
