"""Path diversity: how many genuinely different correct solutions a problem has.

A solution is first normalised so that surface differences do not count:

    code:  the AST with every local name renamed in order of first use (v0, v1, ...) and
           docstrings dropped:  `def f(a): return a+1`  ==  `def g(x):\\n    return x + 1`
    math:  the sequence of numbers it writes:  " 8*8=64. 64+67=131. #### 131" -> 8 8 64 64 67 131 131
    lean:  the sequence of tactic names:  "nlinarith [sq_nonneg x]\\nsimp" -> nlinarith simp

then `distinct` counts different normal forms and `mean_edit_distance` is the
mean pairwise token edit distance between them, divided by the longer length
(0 = identical, 1 = nothing in common).
"""

from __future__ import annotations

import ast
import builtins
import itertools
import re

_BUILTINS = frozenset(dir(builtins))
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_LEAN_TACTIC = re.compile(r"^\s*(?:·\s*)?([A-Za-z_][\w!?']*)", re.MULTILINE)
_CODE_FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


class _Renamer(ast.NodeTransformer):
    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def _canon(self, name: str) -> str:
        return self.names.setdefault(name, f"v{len(self.names)}")

    def visit_Name(self, node: ast.Name) -> ast.AST:
        node.id = node.id if node.id in _BUILTINS else self._canon(node.id)
        return node

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.arg = self._canon(node.arg)
        node.annotation = None
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.name = self._canon(node.name)
        body = node.body
        first = body[0] if body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
        node.returns = None
        self.generic_visit(node)
        return node


def normalize_code(completion: str) -> tuple[str, ...]:
    m = _CODE_FENCE.search(completion)
    code = m.group(1) if m else completion
    try:
        tree = _Renamer().visit(ast.parse(code))
    except (SyntaxError, ValueError, RecursionError):
        return tuple(code.split())
    return tuple(re.findall(r"\w+|[^\w\s]", ast.unparse(tree)))


def normalize_math(completion: str) -> tuple[str, ...]:
    return tuple(_NUMBER.findall(completion.replace(",", "")))


def normalize_lean(completion: str) -> tuple[str, ...]:
    return tuple(_LEAN_TACTIC.findall(completion.split("```")[0]))


NORMALIZERS = {
    "arith": normalize_math,
    "gsm8k": normalize_math,
    "mbpp": normalize_code,
    "humaneval": normalize_code,
    "minif2f": normalize_lean,
}


def edit_distance(a: tuple[str, ...], b: tuple[str, ...]) -> int:
    """Levenshtein distance between token sequences."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def diversity(domain: str, completions: list[str], max_pairs: int = 200) -> dict[str, float]:
    """{'n': correct solutions, 'distinct': distinct normal forms, 'mean_edit_distance': in [0, 1]}."""
    forms = sorted({NORMALIZERS[domain](c) for c in completions})
    pairs = list(itertools.combinations(forms, 2))[:max_pairs]
    dist = [edit_distance(a, b) / max(len(a), len(b), 1) for a, b in pairs]
    return {"n": len(completions), "distinct": len(forms), "mean_edit_distance": sum(dist) / len(dist) if dist else 0.0}
