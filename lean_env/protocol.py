"""The JSON protocol of the Lean REPL (leanprover-community/repl), as typed models.

Mirrors `REPL/JSON.lean` and the input dispatch of `REPL/Main.lean` (the
transcripts under ``../shared/data/lean_repl_transcripts`` were recorded with
commit 8948401, Lean v4.33.0-rc2). Field aliases are the REPL's JSON keys;
Python attribute names are snake_case (``Command(cmd=..., all_tactics=True)``
serialises to ``{"cmd": ..., "allTactics": true}``).

Framing (what the REPL does, `getLines`/`loop` in Main.lean):

* input: the REPL reads stdin line by line until a line that is blank after
  trimming, joins the lines *after trimming each one's trailing whitespace*
  (so a raw newline inside a JSON string vanishes: ``by⏎sorry`` reads as
  ``bysorry``), and parses the result as one JSON command. A block starting
  with ``#`` or ``--`` is skipped as a comment; end of input ends the REPL.
  `frame_request` writes one request as a single JSON line plus one blank
  line, exactly like the upstream ``test/*.in`` files; JSON escapes every
  newline inside strings, so nothing is lost.
* output: each response is ``toString`` of a Lean `Json` value (pretty
  printed over several lines, never containing a blank line) followed by an
  empty line, so responses are separated by exactly one blank line.
  `split_responses` / `ResponseBuffer` implement that.
* errors: ``{"message": ...}`` (`LeanError`) -- unknown env / proof state, a
  tactic that throws, an unreadable file. Lean's *own* diagnostics (type
  errors, unsolved goals) are ordinary `messages` with severity ``error``.

This module does no I/O; all subprocess handling lives in `lean_env.repl`.
"""

from __future__ import annotations

import json
from typing import Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "Command",
    "CommandResponse",
    "FileCommand",
    "InfoTreeHole",
    "InfoTreeNode",
    "LeanError",
    "Message",
    "PickleEnvironment",
    "PickleProofState",
    "Pos",
    "ProofStep",
    "ProofStepResponse",
    "ProtocolError",
    "Request",
    "Response",
    "ResponseBuffer",
    "Sorry",
    "Tactic",
    "UnpickleEnvironment",
    "UnpickleProofState",
    "frame_request",
    "parse_request",
    "parse_response",
    "read_request_blocks",
    "split_responses",
]


class ProtocolError(ValueError):
    """Text that is not valid REPL protocol (a request or response that cannot be parsed)."""


# --------------------------------------------------------------------------- base classes


class _Request(BaseModel):
    """A request. Unknown fields are refused: we build requests ourselves and a
    typo would otherwise be silently ignored by the REPL."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")

    def to_json(self) -> str:
        """One line of JSON (newlines inside strings are escaped)."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


class _Response(BaseModel):
    """A response. Unknown fields are kept (``model_extra``) so that a newer
    REPL does not break parsing; the transcript tests assert there are none."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as the REPL sent it (fields it omitted stay omitted)."""
        return self.model_dump(by_alias=True, exclude_unset=True, mode="json")


# --------------------------------------------------------------------------- requests


class _CommandOptions(_Request):
    # REPL.CommandOptions: allTactics, rootGoals, infotree ("full" | "tactics" | "original" | "substantive").
    all_tactics: bool | None = Field(default=None, alias="allTactics")
    root_goals: bool | None = Field(default=None, alias="rootGoals")
    infotree: str | None = None


class Command(_CommandOptions):
    """Run Lean source. Without `env` a fresh environment is started (the only
    place `import` is allowed); with `env` the text runs on top of that
    environment, which is how a header is imported once and reused."""

    cmd: str
    env: int | None = None
    gc: bool | None = None  # newer REPLs: drop the command's snapshot after answering


class FileCommand(_CommandOptions):
    """Process a Lean file (path relative to the REPL's working directory)."""

    path: str
    env: int | None = None


class ProofStep(_Request):
    """Run one tactic on a recorded proof state."""

    proof_state: int = Field(alias="proofState")
    tactic: str


class PickleEnvironment(_Request):
    env: int
    pickle_to: str = Field(alias="pickleTo")


class UnpickleEnvironment(_Request):
    unpickle_env_from: str = Field(alias="unpickleEnvFrom")


class PickleProofState(_Request):
    proof_state: int = Field(alias="proofState")
    pickle_to: str = Field(alias="pickleTo")


class UnpickleProofState(_Request):
    unpickle_proof_state_from: str = Field(alias="unpickleProofStateFrom")
    env: int | None = None


Request = (
    Command | FileCommand | ProofStep | PickleEnvironment | UnpickleEnvironment | PickleProofState | UnpickleProofState
)

# The REPL tries the input types in this order and takes the first whose
# required fields are present (Lean's derived FromJson ignores extra keys).
_DISPATCH: tuple[tuple[type[_Request], tuple[str, ...]], ...] = (
    (ProofStep, ("proofState", "tactic")),
    (PickleEnvironment, ("env", "pickleTo")),
    (UnpickleEnvironment, ("unpickleEnvFrom",)),
    (PickleProofState, ("proofState", "pickleTo")),
    (UnpickleProofState, ("unpickleProofStateFrom",)),
    (Command, ("cmd",)),
    (FileCommand, ("path",)),
)

# Which response shape each request gets back (besides LeanError).
_COMMAND_LIKE = (Command, FileCommand, PickleEnvironment, UnpickleEnvironment)
_PROOF_LIKE = (ProofStep, PickleProofState, UnpickleProofState)


def parse_request(data: dict[str, Any] | str, strict: bool = True) -> Request:
    """The request the REPL would see in `data` (a dict or a JSON text).
    The kind is chosen as the REPL chooses it; keys that kind does not have
    raise ProtocolError if `strict`, else are dropped (as the REPL ignores them)."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"request is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"request must be a JSON object, got {type(data).__name__}")
    for model, required in _DISPATCH:
        if all(k in data for k in required):
            if not strict:
                known = {f.alias or n for n, f in model.model_fields.items()}
                data = {k: v for k, v in data.items() if k in known}
            try:
                return cast(Request, model.model_validate(data))
            except Exception as exc:
                raise ProtocolError(f"bad {model.__name__} request {data!r}: {exc}") from exc
    raise ProtocolError(f"not a REPL command (no cmd/path/tactic/pickle field): {data!r}")


def frame_request(request: Request) -> str:
    """The bytes to write to the REPL's stdin for one request: a JSON line and a blank line."""
    line = request.to_json()
    # json.dumps escapes control characters, so the line cannot contain a raw
    # newline; it always starts with "{", so it is never read as a comment.
    assert "\n" not in line and line.startswith("{")
    return line + "\n\n"


_LEAN_WS = " \t\r\n"


def read_request_blocks(text: str) -> list[str]:
    """Split REPL input the way the REPL does (`getLines`): a request is the
    run of lines up to a blank one, each line right-trimmed, concatenated.
    Comment blocks (starting ``#`` or ``--``) are dropped, as the REPL does."""
    blocks: list[str] = []
    current: list[str] = []
    # Lean's getLine splits at "\n" only, and its trim/trimRight strip only
    # space, tab, CR and LF (Char.isWhitespace), so str.splitlines/strip would differ.
    for line in text.split("\n"):
        if not line.strip(_LEAN_WS):
            if current:
                blocks.append("".join(current))
                current = []
            continue
        current.append(line.rstrip(_LEAN_WS))
    if current:
        blocks.append("".join(current))
    return [b for b in blocks if not (b.startswith("#") or b.startswith("--"))]


# --------------------------------------------------------------------------- responses


class Pos(_Response):
    line: int
    column: int

    def __lt__(self, other: Pos) -> bool:
        return (self.line, self.column) < (other.line, other.column)


class Message(_Response):
    """A Lean message (`REPL.Message`)."""

    severity: Literal["trace", "info", "warning", "error"]
    pos: Pos
    end_pos: Pos | None = Field(default=None, alias="endPos")
    data: str


class Sorry(_Response):
    """A `sorry` with its goal; `proof_state` lets tactic mode continue from it.
    `pos`/`endPos` are omitted by the REPL when unknown (line 0)."""

    goal: str
    proof_state: int | None = Field(default=None, alias="proofState")
    pos: Pos | None = None
    end_pos: Pos | None = Field(default=None, alias="endPos")


class Tactic(_Response):
    """One tactic of a command run with ``allTactics``."""

    tactic: str
    goals: str
    pos: Pos
    end_pos: Pos = Field(alias="endPos")
    proof_state: int | None = Field(default=None, alias="proofState")
    used_constants: tuple[str, ...] = Field(default=(), alias="usedConstants")


class SyntaxRange(_Response):
    synthetic: bool
    start: Pos
    finish: Pos


class SyntaxJson(_Response):
    pp: str | None = None
    range: SyntaxRange
    kind: str | None = None
    arg_kinds: tuple[str, ...] | None = Field(default=None, alias="argKinds")
    raw: str | None = None  # older REPLs


class TacticNode(_Response):
    name: str | None = None
    stx: SyntaxJson
    goals_before: tuple[str, ...] = Field(default=(), alias="goalsBefore")
    goals_after: tuple[str, ...] = Field(default=(), alias="goalsAfter")


class TermNode(_Response):
    elaborator: str | None = None
    stx: SyntaxJson
    expected_type: str | None = Field(default=None, alias="expectedType")
    expr: str
    is_binder: bool = Field(alias="isBinder")


class CommandNode(_Response):
    elaborator: str | None = None
    stx: SyntaxJson


class InfoTreeHole(_Response):
    """An unassigned metavariable in an info tree."""

    goal_state: str = Field(alias="goalState")


_NODE_TYPES: dict[str, type[_Response]] = {
    "TacticInfo": TacticNode,
    "TermInfo": TermNode,
    "CommandInfo": CommandNode,
}


class InfoTreeNode(_Response):
    """A node of the info tree returned for ``"infotree": ...`` commands.
    `node` is typed by `kind` (TacticInfo / TermInfo / CommandInfo); other
    kinds carry no node (``null``)."""

    kind: str
    node: TacticNode | TermNode | CommandNode | dict[str, Any] | None = None
    children: tuple[InfoTreeNode | InfoTreeHole, ...] = ()

    @field_validator("node", mode="before")
    @classmethod
    def _node_by_kind(cls, value: Any, info: Any) -> Any:
        if isinstance(value, dict):
            model = _NODE_TYPES.get(info.data.get("kind", ""))
            if model is not None:
                return model.model_validate(value)
        return value

    @field_validator("children", mode="before")
    @classmethod
    def _children(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(_info_child(c) for c in value)
        return value

    def walk(self):
        """Depth-first, pre-order."""
        stack: list[Any] = [self]
        while stack:
            tree = stack.pop()
            yield tree
            if isinstance(tree, InfoTreeNode):
                stack.extend(reversed(tree.children))


def _info_child(c: Any) -> Any:
    if isinstance(c, dict):
        return (InfoTreeHole if "goalState" in c else InfoTreeNode).model_validate(c)
    return c


InfoTreeNode.model_rebuild()


class _HasMessages(_Response):
    messages: tuple[Message, ...] = ()
    sorries: tuple[Sorry, ...] = ()

    @property
    def errors(self) -> tuple[Message, ...]:
        return tuple(m for m in self.messages if m.severity == "error")

    @property
    def has_errors(self) -> bool:
        return any(m.severity == "error" for m in self.messages)


class CommandResponse(_HasMessages):
    """Answer to `Command` / `FileCommand` / (un)pickling an environment."""

    env: int | None = None
    tactics: tuple[Tactic, ...] = ()
    infotree: tuple[InfoTreeNode, ...] | None = None


class ProofStepResponse(_HasMessages):
    """Answer to `ProofStep` / (un)pickling a proof state. `proof_status` is
    "Completed", "Incomplete: ..." or "Error: ..." (newer REPLs only)."""

    proof_state: int = Field(alias="proofState")
    goals: tuple[str, ...] = ()
    traces: tuple[str, ...] = ()
    proof_status: str | None = Field(default=None, alias="proofStatus")


class LeanError(_Response):
    """``{"message": ...}``: the REPL could not do what was asked (unknown
    environment or proof state, a tactic that threw, an unreadable file)."""

    message: str


Response = CommandResponse | ProofStepResponse | LeanError


def parse_response(data: dict[str, Any] | str, request: Request | None = None) -> Response:
    """Type a response; with `request` known, the shape follows the request
    kind (as in the REPL), otherwise it is inferred from the keys."""
    if isinstance(data, str):
        text = data
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProtocolError(f"response is not JSON: {exc}: {text[:200]!r}") from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"response must be a JSON object, got {type(data).__name__}")
    try:
        if set(data) == {"message"}:
            return LeanError.model_validate(data)
        if request is not None:
            if isinstance(request, _PROOF_LIKE):
                return ProofStepResponse.model_validate(data)
            return CommandResponse.model_validate(data)
        if "proofState" in data and "goals" in data:
            return ProofStepResponse.model_validate(data)
        return CommandResponse.model_validate(data)
    except ProtocolError:
        raise
    except Exception as exc:
        raise ProtocolError(f"bad response {str(data)[:300]}: {exc}") from exc


# --------------------------------------------------------------------------- output framing


def split_responses(text: str) -> list[str]:
    """Split REPL output into response texts (JSON values separated by blank lines).
    Raises ProtocolError if the text does not end at a response boundary."""
    buf = ResponseBuffer()
    out = buf.feed(text)
    if buf.pending.strip():
        raise ProtocolError(f"output ends inside a response: {buf.pending[:200]!r}")
    return out


class ResponseBuffer:
    """Incremental response framing for a byte/str stream from the REPL.

    `feed` returns the complete response texts seen so far. A block that does
    not start with ``{`` (e.g. a stray warning line printed by `lake`) is kept
    in `noise` rather than parsed, so it cannot shift the request/response
    pairing.
    """

    def __init__(self) -> None:
        self.pending = ""
        self.noise: list[str] = []

    def feed(self, chunk: str) -> list[str]:
        self.pending += chunk
        out: list[str] = []
        while True:
            stripped = self.pending.lstrip("\n")
            idx = stripped.find("\n\n")
            if idx < 0:
                self.pending = stripped
                return out
            block, self.pending = stripped[:idx], stripped[idx + 2 :]
            lines = block.split("\n")
            first = next((i for i, ln in enumerate(lines) if ln.startswith("{")), None)
            if first is None:
                self.noise.append(block)
                continue
            if first:
                self.noise.append("\n".join(lines[:first]))
            out.append("\n".join(lines[first:]))
