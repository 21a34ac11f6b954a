"""miniF2F in Lean 4: the model writes a tactic proof, Lean checks it.

    >>> d = get_domain("minif2f")                          # ../shared/data/minif2f/minif2f.jsonl
    >>> p = d.load("test", limit=1)[0]                     # works without Lean
    >>> p.problem_id
    'minif2f/mathd_algebra_478'
    >>> d.check(p, "  nlinarith [sq_nonneg (x - 1)]")     # needs Lean: see `pidistill doctor`

Data: one JSON row per theorem (DeepSeek-Prover-V1.5's ``minif2f.jsonl``):
``name``, ``split`` (``valid``/``test``), ``informal_prefix`` (a doc comment
with the natural-language problem), ``formal_statement`` (``theorem ... := by``
and a newline, no proof), ``goal``, ``header`` (imports, options, ``open``).
There are no reference proofs.

Splits: miniF2F has ``valid`` and ``test``; ``train`` maps to the ``valid`` rows
and ``test`` to the ``test`` rows. With ``path=`` another file of the same
format is used as one split, as-is (every row, whatever `split` asks).

Prompt: an instruction, then (if any) the privileged-information block, then
the answer cue: a ``lean4`` code block holding header + informal prefix +
formal statement, which the model continues with the proof and closes with
```` ``` ```` (the stop sequence).

Checking: the completion (cut at ```` ``` ````, an opening fence dropped; a restated theorem is reduced to
its proof, so the statement checked is always the dataset's) is appended to the
formal statement and run by a Lean REPL on top of the header environment,
which each REPL imports once (`lean_env.repl`). Verdict: pass iff Lean reports
no error and no ``sorry`` and the proof uses no forbidden construct
(`lean_env.proofs.find_cheats`; ``native_decide`` only with
``allow_native_decide=True``); the feedback of a failure is Lean's error text.
A proof that runs past `timeout` is ``timeout``; a REPL that dies mid-proof is
``error``. The REPL pool starts on the first check, so loading and prompting
need no Lean; without Lean, `check`/`check_many`/`preflight` raise
`LeanNotFound` ("Lean not found, see pidistill doctor") rather than failing
proofs.

Options: ``repl_command`` (default ``lake env repl`` or ``$PIDISTILL_LEAN_REPL``),
``project_dir`` (a Lake project with Mathlib and the REPL; default
``$PIDISTILL_LEAN_PROJECT``), ``timeout`` (s per proof, 60), ``startup_timeout``
(s for start + header import, 600), ``memory_mb`` (RLIMIT_AS per REPL, 32768;
``rlimit="DATA"`` limits only heap memory instead),
``max_rss_mb`` (recycle a REPL above this RSS, 12288), ``pool_size`` (parallel
REPLs, default min(4, cores/2)), ``allow_native_decide`` (False), ``proofs_path``
(JSONL of reference proofs ``{"name", "proof"}``: the problem's `solution`, which the
``skeleton`` and ``correct_answer`` retry PIs need; miniF2F ships none, see `PROOFS_NEEDED`).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Any

from domains import DomainError, data_root
from domains.base import BaseDomain, Problem, Verdict, file_sha256
from domains.data import read_jsonl
from domains.pi import PIUnavailable, PrivilegedInfo, pi_section
from lean_env.pool import ReplPool
from lean_env.proofs import ProofVerdict, find_cheats, have_skeleton, judge_outcome, mask_comments, split_declaration
from lean_env.repl import LeanNotFound, ReplConfig, preflight

__all__ = ["LeanNotFound", "MiniF2FDomain"]

SPLIT_MAP = {"train": "valid", "test": "test"}
INSTRUCTION = "Complete the following Lean 4 code:"
# What the skeleton and correct_answer PIs need and how to give it (preflight and the PI errors say this).
PROOFS_NEEDED = (
    "miniF2F ships no reference proofs and pidistill bundles none: write a JSONL file with one row per training "
    'theorem (the valid split), {"name": "<theorem name, as in minif2f.jsonl>", "proof": "<the tactic proof, '
    'the text after `:= by`>"}, and pass it with --set domain.options.proofs_path=/path/to/proofs.jsonl'
)


def _default_pool_size() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _read_proofs(path: Path) -> dict[str, str]:
    """Reference proofs: JSONL rows {"name": theorem name, "proof": the text after `:= by`}."""
    if not path.is_file():
        raise DomainError(f"minif2f: proofs file {path} not found")
    return {row["name"]: row["proof"] for row in read_jsonl(path, ("name", "proof"), what="proof row")}


class MiniF2FDomain(BaseDomain):
    name = "minif2f"
    stop: tuple[str, ...] = ("```",)

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        repl_command: str | list[str] | tuple[str, ...] | None = None,
        project_dir: str | Path | None = None,
        timeout: float = 60.0,
        startup_timeout: float = 600.0,
        memory_mb: int | None = 32768,
        rlimit: str = "AS",
        max_rss_mb: int | None = 12288,
        pool_size: int | None = None,
        allow_native_decide: bool = False,
        proofs_path: str | Path | None = None,
        **unknown: Any,
    ) -> None:
        if unknown:
            raise DomainError(f"minif2f: unknown option(s) {', '.join(sorted(unknown))}")
        self.custom_path = path is not None
        self.path = Path(path) if path is not None else data_root() / "minif2f" / "minif2f.jsonl"
        if not self.path.is_file():
            raise DomainError(f"minif2f: data file {self.path} not found")
        try:
            self.config = ReplConfig(
                command=tuple(repl_command) if isinstance(repl_command, list) else repl_command,
                project_dir=project_dir,
                timeout=float(timeout),
                startup_timeout=float(startup_timeout),
                memory_mb=memory_mb,
                rlimit=rlimit,  # type: ignore[arg-type]
                max_rss_mb=max_rss_mb,
            )
        except ValueError as exc:
            raise DomainError(f"minif2f: bad Lean option: {exc}") from exc
        self.pool_size = int(pool_size) if pool_size else _default_pool_size()
        self.allow_native_decide = bool(allow_native_decide)
        self.proofs = _read_proofs(Path(proofs_path)) if proofs_path is not None else {}
        self._rows: list[dict[str, Any]] | None = None
        self._pool: ReplPool | None = None
        self._pool_lock = threading.Lock()

    # ------------------------------------------------------------------ data

    def _load_rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            rows = read_jsonl(self.path, ("name", "formal_statement", "header"), what="minif2f row", text_fields=True)
            self._rows = rows
        return self._rows

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        if split not in SPLIT_MAP:
            raise DomainError(f"minif2f: unknown split {split!r}; use 'train' (miniF2F valid) or 'test'")
        rows = self._load_rows()
        if not self.custom_path:
            rows = [r for r in rows if r.get("split") == SPLIT_MAP[split]]
        if limit is not None:
            rows = rows[: max(0, limit)]
        return [self._problem(r) for r in rows]

    def _problem(self, row: dict[str, Any]) -> Problem:
        informal = row.get("informal_prefix") or ""
        return Problem(
            problem_id=f"minif2f/{row['name']}",
            domain=self.name,
            question=informal + row["formal_statement"],
            solution=self.proofs.get(row["name"], ""),
            meta={
                "name": row["name"],
                "split": row.get("split", ""),
                "header": row["header"],
                "informal_prefix": informal,
                "formal_statement": row["formal_statement"],
                "goal": row.get("goal", ""),
            },
        )

    def data_hash(self) -> str:
        return file_sha256(self.path)

    # ------------------------------------------------------------------ prompts

    def prompt(self, problem: Problem, pi: PrivilegedInfo | None = None) -> str:
        m = problem.meta
        pi_block = pi_section(pi)
        parts = [INSTRUCTION, ""]
        if pi_block:
            parts += [pi_block, ""]
        parts.append("```lean4\n" + m["header"] + m["informal_prefix"] + m["formal_statement"])
        return "\n".join(parts)

    def skeleton(self, problem: Problem) -> str:
        """The `have` skeleton of the reference proof (needs the `proofs_path` option)."""
        return self.skeleton_pi(problem, self.reference_answer(problem)).text

    def reference_answer(self, problem: Problem) -> str:
        """The reference proof (correct_answer PI; the skeleton's source), from the `proofs_path` file."""
        if not problem.solution:
            raise PIUnavailable(f"no reference proof for {problem.problem_id}: {PROOFS_NEEDED}")
        return problem.solution

    def skeleton_pi(self, problem: Problem, proof: str) -> PrivilegedInfo:
        """The ``skeleton`` privileged information from a (reference) proof of `problem`."""
        return PrivilegedInfo("skeleton", have_skeleton(self.proof_code(problem, proof)))

    # ------------------------------------------------------------------ checking

    def proof_code(self, problem: Problem, completion: str) -> str:
        """The Lean text checked for `completion`: the formal statement followed by the proof."""
        statement = problem.meta["formal_statement"]
        proof = completion
        if proof.lstrip().startswith("```"):  # an opened code block: drop its fence line
            rest = proof.lstrip()
            proof = rest[rest.find("\n") + 1 :] if "\n" in rest else ""
        fence = proof.find("```")
        if fence >= 0:
            proof = proof[:fence]
        name = re.escape(problem.meta["name"])
        restated = re.search(rf"(?<![\w.'])(?:theorem|lemma)\s+{name}(?![\w'!?])", mask_comments(proof))
        if restated is not None:
            head, body = split_declaration(proof[restated.start() :])
            if head:
                proof = body
        if not statement.endswith("\n") and not proof.startswith((" ", "\n")):
            proof = " " + proof
        return statement + proof

    def preflight(self, start: bool = False) -> None:
        """Raise LeanNotFound unless a REPL can be started; with `start`, also
        start the pool and import the miniF2F header now."""
        preflight(self.config)
        if start:
            rows = self._load_rows()
            self._get_pool().start(rows[0]["header"] if rows else "")

    def _get_pool(self) -> ReplPool:
        with self._pool_lock:
            if self._pool is None:
                preflight(self.config)
                self._pool = ReplPool(self.config, size=self.pool_size)
            return self._pool

    def _verdict(self, pv: ProofVerdict) -> Verdict:
        if pv.status == "complete":
            return Verdict(status="pass", passed=True, score=1.0)
        if pv.status == "timeout":
            return Verdict(status="timeout", passed=False, score=0.0, feedback=pv.feedback)
        if pv.status in ("crash", "repl_error"):
            return Verdict.error(pv.feedback or "Lean REPL failed")
        return Verdict(status="fail", passed=False, score=0.0, feedback=pv.feedback)

    def _precheck(self, problem: Problem, completion: str) -> tuple[str, Verdict | None]:
        code = self.proof_code(problem, completion)
        cheats = find_cheats(code[len(problem.meta["formal_statement"]) :], self.allow_native_decide)
        if cheats:
            feedback = "the proof uses forbidden constructs: " + ", ".join(cheats)
            return code, Verdict(status="fail", passed=False, score=0.0, feedback=feedback)
        return code, None

    def check(self, problem: Problem, completion: str) -> Verdict:
        pool = self._get_pool()  # raises LeanNotFound before judging anything
        code, early = self._precheck(problem, completion)
        if early is not None:
            return early
        outcome = pool.check(code, header=problem.meta["header"])
        return self._verdict(judge_outcome(outcome, code, self.allow_native_decide))

    def check_many(self, problems: list[Problem], completions: list[str]) -> list[Verdict]:
        if len(problems) != len(completions):
            raise ValueError(f"check_many: {len(problems)} problems but {len(completions)} completions")
        pool = self._get_pool()
        verdicts: list[Verdict | None] = []
        todo: list[int] = []
        codes: list[str] = []
        for i, (p, c) in enumerate(zip(problems, completions)):
            code, early = self._precheck(p, c)
            verdicts.append(early)
            codes.append(code)
            if early is None:
                todo.append(i)
        outcomes = pool.check_many([codes[i] for i in todo], [problems[i].meta["header"] for i in todo])
        for i, outcome in zip(todo, outcomes):
            try:
                verdicts[i] = self._verdict(judge_outcome(outcome, codes[i], self.allow_native_decide))
            except Exception as exc:  # a verifier bug is an error, never a wrong answer
                verdicts[i] = Verdict.crashed(exc)
        return [v for v in verdicts if v is not None]

    def close(self) -> None:
        """Stop the REPL processes (they also exit when this process does)."""
        with self._pool_lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
