"""Proof-level logic on top of the REPL: verdicts, feedback, cheat detection and
`have`-skeletons. Pure functions, no I/O.

* `judge_response` / `judge_outcome`: a proof is **complete** iff Lean reports
  no error message and no ``sorry`` (neither in `sorries` nor as a "declaration
  uses `sorry`" warning) and the text uses no forbidden construct. Otherwise
  the verdict carries `feedback`: Lean's error messages with positions (the
  type-checker-feedback privileged information).
* `find_cheats`: constructs that make Lean accept a proof without proving it:
  ``sorry``/``admit``/``sorryAx``, new ``axiom``s, ``native_decide`` /
  ``decide +native`` / ``ofReduceBool`` (trusts compiled code; allowed only if
  configured), ``implemented_by``/``extern``, ``unsafe``, turning off kernel
  checking, and metaprogramming commands that can add declarations
  (``run_cmd``, ``elab``, ``#eval``, ...). Comments and string literals are
  ignored.
* `have_skeleton`: the top-level ``have`` (and ``obtain``) statements of a
  reference proof with their bodies replaced by ``sorry``, plus the
  name-introducing ``intro``/``rcases`` lines, closed by a final ``sorry``: the outline shown as
  the ``skeleton`` privileged information.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lean_env.protocol import CommandResponse, LeanError, Message, ProofStepResponse, Response

__all__ = [
    "ProofVerdict",
    "find_cheats",
    "format_messages",
    "have_skeleton",
    "have_statements",
    "judge_outcome",
    "judge_response",
    "mask_comments",
    "split_declaration",
]

ProofStatus = Literal["complete", "error", "incomplete", "cheat", "timeout", "crash", "repl_error"]

FEEDBACK_CHARS = 2000
MESSAGE_CHARS = 700

_SORRY_WARNING = re.compile(r"declaration uses ['`]sorry['`]")


@dataclass(frozen=True)
class ProofVerdict:
    """status: complete | error (Lean errors) | incomplete (sorry) | cheat |
    timeout | crash (the REPL died) | repl_error (``{"message": ...}``)."""

    status: ProofStatus
    feedback: str = ""
    errors: tuple[Message, ...] = ()
    cheats: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.status == "complete"


# --------------------------------------------------------------------------- lexing


def mask_comments(code: str, strings: bool = False) -> str:
    """`code` with comments (``-- ...``, nested ``/- ... -/``) replaced by spaces,
    and with `strings` also the contents of string literals; same length,
    newlines kept, so offsets and line numbers still match."""
    out = list(code)
    i, n = 0, len(code)

    def blank(a: int, b: int) -> None:
        for k in range(a, min(b, n)):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        if code.startswith("--", i):
            j = code.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif code.startswith("/-", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if code.startswith("/-", j):
                    depth, j = depth + 1, j + 2
                elif code.startswith("-/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif code[i] == '"':
            j = i + 1
            while j < n and code[j] != '"':
                j += 2 if code[j] == "\\" else 1
            if strings:
                blank(i + 1, j)
            i = j + 1
        else:
            i += 1
    return "".join(out)


_ID = r"[\w'!?.]"  # characters that continue a Lean identifier


def _word(w: str) -> str:
    return rf"(?<!{_ID}){re.escape(w)}(?!{_ID})"


_CHEATS: tuple[tuple[str, str], ...] = (
    ("sorry", _word("sorry")),
    ("admit", _word("admit")),
    ("sorryAx", _word("sorryAx")),
    ("axiom", _word("axiom")),
    ("implemented_by", r"@\[[^\]]*\b(?:implemented_by|extern)\b"),
    ("unsafe", _word("unsafe")),
    ("skipKernelTC", r"skipKernelTC|debug\.skip"),
    (
        "metaprogramming",
        r"(?m)^\s*(?:local\s+|scoped\s+)?(?:run_cmd|run_elab|run_meta|elab|elab_rules|macro|macro_rules|syntax|"
        r"initialize|#eval)\b|" + _word("run_tac"),
    ),
)
_NATIVE: tuple[str, str] = (
    "native_decide",
    _word("native_decide") + r"|decide\s*\+\s*native|" + _word("ofReduceBool") + r"|\bnative\s*:=\s*true",
)


def find_cheats(code: str, allow_native_decide: bool = False) -> list[str]:
    """Names of the forbidden constructs used in `code` (outside comments and strings)."""
    masked = mask_comments(code, strings=True)
    rules = list(_CHEATS) + ([] if allow_native_decide else [_NATIVE])
    return [name for name, pattern in rules if re.search(pattern, masked)]


# --------------------------------------------------------------------------- verdicts


def format_messages(messages: tuple[Message, ...] | list[Message], max_chars: int = FEEDBACK_CHARS) -> str:
    """Lean messages as feedback text: ``line L, column C: error: ...`` each."""
    parts: list[str] = []
    for m in messages:
        data = m.data if len(m.data) <= MESSAGE_CHARS else m.data[:MESSAGE_CHARS] + " ..."
        parts.append(f"line {m.pos.line}, column {m.pos.column}: {m.severity}: {data}")
    text = "\n\n".join(parts)
    return text if len(text) <= max_chars else text[: max_chars - 4] + " ..."


def _uses_sorry(resp: CommandResponse | ProofStepResponse) -> bool:
    return bool(resp.sorries) or any(_SORRY_WARNING.search(m.data) for m in resp.messages)


def judge_response(resp: Response, code: str | None = None, allow_native_decide: bool = False) -> ProofVerdict:
    """The verdict on a REPL answer for a whole proof (`code` is scanned for cheats if given)."""
    if isinstance(resp, LeanError):
        return ProofVerdict("repl_error", f"Lean REPL error: {resp.message}"[:FEEDBACK_CHARS])
    errors = resp.errors
    cheats = tuple(find_cheats(code, allow_native_decide)) if code is not None else ()
    sorry = _uses_sorry(resp)
    if isinstance(resp, ProofStepResponse) and not errors and not sorry:
        status = resp.proof_status
        if status is not None and status != "Completed":
            kind: ProofStatus = "error" if status.startswith("Error") else "incomplete"
            return ProofVerdict(kind, f"proof not complete: {status}", errors, cheats)
        if status is None and resp.goals:
            return ProofVerdict("incomplete", "proof not complete: open goals remain", errors, cheats)
    if errors:
        feedback = format_messages(errors)
        if sorry:
            feedback = (feedback + "\n\n(the proof also contains `sorry`)")[:FEEDBACK_CHARS]
        return ProofVerdict("error", feedback, errors, cheats)
    if sorry:
        goals = [s.goal for s in resp.sorries]
        feedback = "the proof is incomplete: it uses `sorry`"
        if goals:
            feedback += " for the goal" + ("s" if len(goals) > 1 else "") + ":\n" + "\n\n".join(goals)
        return ProofVerdict("incomplete", feedback[:FEEDBACK_CHARS], errors, cheats)
    if cheats:
        return ProofVerdict("cheat", "the proof uses forbidden constructs: " + ", ".join(cheats), errors, cheats)
    return ProofVerdict("complete", "", errors, cheats)


def judge_outcome(outcome, code: str | None = None, allow_native_decide: bool = False) -> ProofVerdict:
    """The verdict on a `lean_env.repl.CheckOutcome`."""
    if outcome.status == "timeout":
        return ProofVerdict("timeout", outcome.detail[:FEEDBACK_CHARS])
    if outcome.status != "ok" or outcome.response is None:
        return ProofVerdict("crash", outcome.detail[:FEEDBACK_CHARS])
    return judge_response(outcome.response, code, allow_native_decide)


# --------------------------------------------------------------------------- skeletons

_OPEN, _CLOSE = "([{⟨⦃", ")]}⟩⦄"


def _depth0_index(text: str, token: str, start: int = 0) -> int | None:
    """Index of the first `token` at bracket depth 0 (``:`` never matches ``:=``)."""
    depth = 0
    for i in range(start, len(text)):
        ch = text[i]
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(0, depth - 1)
        elif depth == 0 and text.startswith(token, i):
            if token == ":" and text.startswith(":=", i):
                continue
            return i
    return None


def split_declaration(code: str) -> tuple[str, str]:
    """(head, proof) of the first ``theorem``/``lemma``/``example`` in `code`: head
    ends with its ``:= by`` (or ``:=`` for a term proof). ("", code) if none."""
    masked = mask_comments(code, strings=True)
    m = re.search(r"(?<![\w.'])(?:theorem|lemma|example)\b", masked)
    if m is None:
        return "", code
    i = _depth0_index(masked, ":=", m.end())
    if i is None:
        return "", code
    by = re.match(r"\s*by\b", masked[i + 2 :])
    cut = i + 2 + (by.end() if by else 0)
    return code[:cut], code[cut:]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


_STATEMENT = re.compile(r"(?:have|obtain)(?![\w'!?])")
_CONTEXT = re.compile(r"(?:intro|intros|rintro|rcases)(?![\w'!?])")


@dataclass(frozen=True)
class _Step:
    text: str  # one line (statement) or several (verbatim)
    statement: bool


def _skeleton_steps(proof: str) -> list[_Step]:
    body = mask_comments(proof)
    lines = body.split("\n")
    if lines and lines[0].strip():
        # proof text that starts on the `by` line: treat it as a line of the block
        rest_indents = [_indent(ln) for ln in lines[1:] if ln.strip()]
        lines[0] = " " * (rest_indents[0] if rest_indents else 2) + lines[0].strip()
    nonblank = [ln for ln in lines if ln.strip()]
    if not nonblank:
        return []
    base = _indent(nonblank[0])
    steps: list[_Step] = []
    i, n = 0, len(lines)

    def block_end(k: int) -> int:
        while k < n and (not lines[k].strip() or _indent(lines[k]) > base):
            k += 1
        return k

    while i < n:
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        if _indent(line) < base:
            break  # end of the tactic block
        if _indent(line) > base:
            i += 1
            continue
        stripped = line.strip()
        if _STATEMENT.match(stripped):
            text, j = stripped, i
            pos = _depth0_index(text, ":=")
            while pos is None and j + 1 < n and lines[j + 1].strip() and _indent(lines[j + 1]) > base:
                j += 1
                text += " " + lines[j].strip()
                pos = _depth0_index(text, ":=")
            end = block_end(j + 1)
            head = text if pos is None else text[:pos]
            typed = _depth0_index(head, ":") is not None
            if typed or pos is None:
                steps.append(_Step(" ".join(head.split()) + " := by sorry", True))
            else:  # `have h := term` / `obtain ⟨x, hx⟩ := h`: the body is the statement
                chunk = [ln[base:] if ln[:base].strip() == "" else ln.strip() for ln in lines[i:end]]
                steps.append(_Step("\n".join(c.rstrip() for c in chunk).rstrip(), False))
            i = end
        elif _CONTEXT.match(stripped):
            steps.append(_Step(" ".join(stripped.split()), False))
            i += 1
        else:
            i += 1
    return steps


def have_statements(proof: str) -> list[str]:
    """The top-level ``have``/``obtain`` statements of `proof` (a tactic block or a
    whole declaration), each as ``have name : type := by sorry``."""
    _, body = split_declaration(proof)
    return [s.text for s in _skeleton_steps(body) if s.statement]


def have_skeleton(proof: str, indent: int = 2) -> str:
    """The outline of `proof`: its declaration head (if any), its top-level
    ``have``/``obtain`` statements with bodies replaced by ``sorry``, the
    ``intro``s they depend on, and a final ``sorry``. With a whole declaration
    as input the result is Lean that elaborates with only `sorry` warnings
    whenever the reference proof's statements do."""
    head, body = split_declaration(proof)
    if head and not head.rstrip().endswith("by"):
        head = head.rstrip() + " by"
    pad = " " * indent
    lines: list[str] = []
    for step in _skeleton_steps(body):
        lines.extend(pad + ln for ln in step.text.split("\n"))
    lines.append(pad + "sorry")
    text = "\n".join(lines)
    return f"{head.rstrip()}\n{text}" if head else text
