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
for HumanEval either a full function or the body continuing the prompt) and run in the sandbox
(`sandbox.Sandbox`) by a harness that only COMPUTES: it evaluates the tests' inputs against the
solution and returns the outputs as plain data (`plain`: exact builtin types; an instance of a
subclass, a proxy, anything else is that test's fail). The judgement happens in trusted code that
never runs the candidate's code: MBPP's asserts on the host (the expected side read as a literal
or computed by the reference solution), HumanEval's `check(candidate)` replayed with its own
helpers against the recorded outputs. So an object whose `__eq__` is always true, patched
builtins, a tracer, frames walked for the expected values, or forged report lines can at most
misreport the program's own outputs. With `extra_tests=N` (on for training rewards, see
`VerifyConfig.extra_tests`), each problem also gets N hidden tests: inputs mutated from the shown
ones (`mutate`), expected outputs from the reference solution (and MBPP's challenge tests), so a
lookup table of the shown asserts fails. Every check yields a binary verdict (all tests pass) and
a graded score (fraction of tests passed, hidden included). Verdict status: pass | fail (tests
ran and some failed, including syntax errors, exceptions, non-plain outputs and anything done to
the report channel or the sandbox) | timeout (the score counts the tests judged before it) |
error (the verifier itself failed).

Modules, in the order a check goes through them:
- `extract`: the code in a completion;
- `specs`: a problem's tests split into probes (computed by the candidate) and judgements
  (trusted), and the sandbox programs that run them;
- `mutate`: hidden test inputs, mutated from the shown ones;
- `plain`: outputs as plain data, in and out of the sandbox;
- `harness`: the programs themselves (candidate `run`, reference `plan`, HumanEval `judge`);
  they run in the sandbox and are shipped there as text;
- `verdicts`: the report read strictly, judged, and turned into a `Verdict`;
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
    SpecError,
    Test,
    draft_mbpp,
    harness_call,
    harness_prelude,
    harness_program,
    humaneval_check,
)
from domains.code.verdicts import FEEDBACK_CHARS, ChannelTampered, parse_report, verdict

__all__ = [
    "FEEDBACK_CHARS",
    "HARNESS_MODULE",
    "MBPP_SPLITS",
    "ChannelTampered",
    "HarnessSpec",
    "HumanEvalDomain",
    "MBPPDomain",
    "SpecError",
    "Test",
    "draft_mbpp",
    "extract_code",
    "harness_call",
    "harness_prelude",
    "harness_program",
    "humaneval_check",
    "humaneval_solution",
    "parse_report",
    "verdict",
]
