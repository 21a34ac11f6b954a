"""Lean 4 through leanprover-community/repl: protocol, processes, proofs.

* `lean_env.protocol` -- the REPL's JSON requests/responses as frozen pydantic models, and its framing.
* `lean_env.repl`     -- one REPL process (header imported once, timeouts, memory cap, restarts).
                         All subprocess I/O lives there.
* `lean_env.pool`     -- N REPLs checking proofs in parallel.
* `lean_env.proofs`   -- verdicts, error feedback, cheat detection, `have`-skeletons.
* `lean_env.doctor`   -- is Lean installed and configured here?

No Lean is needed to import any of this; `LeanNotFound` is raised when a REPL
would have to be started and cannot be.
"""

from lean_env.pool import ReplPool
from lean_env.proofs import ProofVerdict, find_cheats, have_skeleton, have_statements, judge_outcome, judge_response
from lean_env.repl import (
    CheckOutcome,
    LeanNotFound,
    LeanRepl,
    ReplConfig,
    ReplCrashed,
    ReplError,
    ReplProtocolError,
    ReplStartError,
    ReplTimeout,
)

__all__ = [
    "CheckOutcome",
    "LeanNotFound",
    "LeanRepl",
    "ProofVerdict",
    "ReplConfig",
    "ReplCrashed",
    "ReplError",
    "ReplPool",
    "ReplProtocolError",
    "ReplStartError",
    "ReplTimeout",
    "find_cheats",
    "have_skeleton",
    "have_statements",
    "judge_outcome",
    "judge_response",
]
