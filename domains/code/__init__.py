"""`mbpp` and `humaneval`: Python programming problems checked by running unit tests in the sandbox.

    >>> from domains import get_domain
    >>> d = get_domain("mbpp")
    >>> p = d.load("test", limit=1)[0]                  # mbpp/11
    >>> v = d.check(p, "```python\\ndef remove_Occ(s, ch):\\n    return s.strip(ch)\\n```")
    >>> v.status, v.passed, round(v.score, 2)           # 2 of its 3 asserts pass
    ('fail', False, 0.67)
    >>> d.check(p, p.solution).passed
    True

Where the data comes from (`path`):
- None: `<data_root>/mbpp/mbpp.jsonl` / `<data_root>/humaneval/HumanEval.jsonl.gz` (bundled copies);
- a file (.jsonl or .jsonl.gz) in the same format;
- anything else: an HF dataset name (`google-research-datasets/mbpp`, `openai/openai_humaneval`).

Checking. The completion's code is extracted (a fenced ```python block, else the bare text;
for HumanEval either a full function or the body continuing the prompt), embedded in a
harness program and run in the sandbox (`sandbox.Sandbox`). The harness runs each test
statement on its own (MBPP: each assert; HumanEval: each statement of `check(candidate)`)
and reports per-test results on a private, nonce-tagged stdout channel (the solution's own
prints go to /dev/null), so every check yields both a binary verdict (all tests pass) and a
graded score (fraction of tests passed). Verdict status: pass | fail (tests ran and some
failed, including syntax errors and exceptions in the model's code) | timeout (the sandbox
timeout hit; the score counts the tests passed before it) | error (the verifier itself failed).

The harness guards against accidents (solutions that print, exit, shadow names, crash); it
is not meant to withstand code written to fool it (e.g. returning an object whose `__eq__`
is always true): that is a limit of in-process unit testing, and the sandbox still contains
such code.

Modules, in the order a check goes through them:
- `extract`: the code in a completion;
- `specs`: a problem's tests as harness steps, and the sandbox program that runs them;
- `harness`: the program itself; it runs in the sandbox and is shipped there as text;
- `verdicts`: the harness's report turned into a `Verdict`;
- `checker`: `_CodeDomain`, the sandbox, batched `check_many` and the verdict cache;
- `flags`: what a program reaches for that the harness runs on (frames, gc, builtins, ...), recorded
  per attempt as `attempts.flags`, pass or fail;
- `data`: reading the problem files;
- `mbpp`, `humaneval`: the two domains (data, splits, prompts).
"""

from domains.code.extract import extract_code, humaneval_solution
from domains.code.humaneval import HumanEvalDomain
from domains.code.mbpp import MBPP_SPLITS, MBPPDomain
from domains.code.specs import (
    HARNESS_MODULE,
    HarnessSpec,
    Step,
    harness_call,
    harness_prelude,
    harness_program,
    humaneval_spec,
    mbpp_spec,
)
from domains.code.verdicts import FEEDBACK_CHARS, HarnessOutputError, verdict_from_run

__all__ = [
    "FEEDBACK_CHARS",
    "HARNESS_MODULE",
    "MBPP_SPLITS",
    "HarnessOutputError",
    "HarnessSpec",
    "HumanEvalDomain",
    "MBPPDomain",
    "Step",
    "extract_code",
    "harness_call",
    "harness_prelude",
    "harness_program",
    "humaneval_solution",
    "humaneval_spec",
    "mbpp_spec",
    "verdict_from_run",
]
