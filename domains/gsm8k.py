"""`gsm8k`: grade-school math word problems with a numeric final answer.

One row of the source file (`{"question", "answer"}`, answer ends in `#### <n>`):

    {"question": "Janet's ducks lay 16 eggs per day. ...",
     "answer": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\\n...\\n#### 18"}

Where the data comes from (`path`):
- None: `<data_root>/gsm8k/{train,test}.jsonl` (the bundled copy);
- a directory: `<dir>/{split}.jsonl`;
- a file: that one file, used as-is whichever split is asked for;
- anything else: an HF dataset name (`openai/gsm8k`, config `main`), loaded with `datasets`.

The `train` split leaves out the training problems that copy a test problem (`TRAIN_COPIES_OF_TEST`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from domains import DomainError, data_root
from domains.base import Problem, file_sha256, stable_hash
from domains.data import looks_like_path, read_jsonl
from domains.numeric import NumericAnswerDomain, normalize_number

_CALCULATOR = re.compile(r"<<[^>]*>>")

# Training problems that copy a test problem, found by `domains.decontam` (problem ids hash the question, so
# this names exactly that text, whatever file it is read from): train id -> the test id it copies.
# "A train travels 270 (and 360) miles in 3 hours ... an additional 180 (240) miles?" are the test's "A plane
# travels 1200 miles ..." with three words changed, and the same two-step solution. Dropped from `train`, so
# a run never trains on an evaluation problem; preflight's decontamination check shows that none remain.
TRAIN_COPIES_OF_TEST: dict[str, str] = {
    "gsm8k-85408ecc0e": "gsm8k-ce265a6cf5",
    "gsm8k-cadf55454a": "gsm8k-ce265a6cf5",
}


class GSM8KDomain(NumericAnswerDomain):
    name = "gsm8k"
    stop = ("\nQuestion:",)
    instruction = "Solve the problem step by step. End with '#### <number>'."

    def __init__(self, path: str | None = None, hf_config: str = "main", last_number_fallback: bool = False):
        self.path = path
        self.hf_config = hf_config
        self.last_number_fallback = last_number_fallback
        if path is None:
            self._source: Path | str = data_root() / "gsm8k"
        elif looks_like_path(path):
            self._source = Path(path).expanduser()
        else:
            self._source = path  # HF dataset name
        if isinstance(self._source, Path) and not self._source.exists():
            raise DomainError(f"gsm8k data not found at {self._source}")

    def _file_for(self, split: str) -> Path | None:
        if not isinstance(self._source, Path):
            return None
        if self._source.is_file():
            return self._source
        f = self._source / f"{split}.jsonl"
        if not f.exists():
            raise DomainError(f"gsm8k split {split!r} not found: {f}")
        return f

    def _rows(self, split: str) -> list[dict[str, Any]]:
        if split not in ("train", "test"):
            raise DomainError(f"gsm8k has splits 'train' and 'test', not {split!r}")
        f = self._file_for(split)
        if f is None:
            import datasets  # only when asked for a hub dataset

            return list(datasets.load_dataset(str(self._source), self.hf_config, split=split))
        return read_jsonl(f, ("question", "answer"), what="gsm8k row")

    def load(self, split: str, limit: int | None = None) -> list[Problem]:
        rows = self._rows(split)
        if split == "train":
            rows = [r for r in rows if _problem_id(r["question"]) not in TRAIN_COPIES_OF_TEST]
        problems = []
        for row in rows[:limit]:
            solution = _CALCULATOR.sub("", row["answer"])
            final = normalize_number(row["answer"].rsplit("####", 1)[-1])
            if final is None:
                raise DomainError(f"gsm8k row has no '#### <number>' answer: {row['answer'][-80:]!r}")
            problems.append(
                Problem(
                    problem_id=_problem_id(row["question"]),
                    domain=self.name,
                    question=row["question"],
                    answer=final,
                    solution=" " + solution.strip(),
                )
            )
        return problems

    def data_hash(self) -> str:
        if isinstance(self._source, Path):
            files = [self._source] if self._source.is_file() else sorted(self._source.glob("*.jsonl"))
            return file_sha256(*files)
        return stable_hash({"hf": self._source, "config": self.hf_config})


def _problem_id(question: str) -> str:
    return "gsm8k-" + stable_hash(question, n=10)
