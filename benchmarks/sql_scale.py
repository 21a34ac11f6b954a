"""SQL over a team's history: query time before and after compaction, vs JSONL + pandas (issue 18).

    .venv/bin/python benchmarks/sql_scale.py                       # 1M attempts in 40 runs, ~12 minutes
    .venv/bin/python benchmarks/sql_scale.py --attempts 100000 --runs 8 --keep /tmp/history

Builds a history with the project's own writer (`storage.writer.write_rows`, the paths `RoundKey.path`
uses): `--runs` completed runs of 3 arms x 3 seeds x 2 rounds, each (arm, seed, round) with the files a
real run writes there (attempts of the train and eval phases with retry levels 0-3, sft_examples,
evaluations, trainings, and one `stages` row file per stage and level), prompts and completions of
realistic length (GSM8K questions and worked answers from the bundled data). Then it times five
questions and every query of docs/sql.md, first as the runs' shards, then after compacting each run
(`storage.compact.compact_run`, what a run does when it completes):

- `pidistill sql`, cold: a new process per query (`python -m cli.entry sql ...`), wall time of the
  whole process, and the query's own time inside a new process (open the catalog, run, fetch: what
  `pidistill sql` does after its imports);
- JSONL + pandas, what verl/prime-rl users do: the same rows as one JSONL dump per (run, arm, seed,
  round) step; first answer = load every dump with pandas and group; repeated = group the frame
  already in memory.

Nothing is asserted; the target (issue 18) is < 0.2 s per query from a cold process at 1M attempts.
Measured 2026-12-04 on the 2-CPU VM, before attempts had their provenance columns (token ids: about 1.5
bytes a token more; not measured since) (load ~1; 999,360 attempts in 40 runs, 11,560 parquet files,
349 MiB, written in 26 s; JSONL + pandas loads the rows in 24.4 s; median of 3 cold processes):

    before compaction            sql cold process  sql query  pandas 1st  pandas again
    pass rate by run/arm/seed/round        0.69 s    0.587 s      27.7 s       3.299 s
    reject reasons                         0.73 s    0.590 s      25.2 s       0.792 s
    retries joined to failed parents       1.38 s    1.290 s      28.7 s       4.217 s
    one run by retry level                 0.94 s    0.642 s      25.1 s       0.626 s
    solved by one arm, not another         1.21 s    1.064 s      25.0 s       0.552 s
    docs/sql.md, 31 queries: median 0.246 s, slowest 2.468 s, 10/31 under 0.2 s

    compaction: 11,520 shards -> 248 files; per run median 0.75 s (max 1.00 s); 349 -> 263 MiB

    after compaction             sql cold process  sql query  pandas 1st  pandas again
    pass rate by run/arm/seed/round        0.19 s    0.071 s      27.7 s       3.223 s
    reject reasons                         0.18 s    0.064 s      25.4 s       0.996 s
    retries joined to failed parents       0.26 s    0.141 s      27.4 s       2.958 s
    one run by retry level                 0.16 s    0.043 s      24.9 s       0.429 s
    solved by one arm, not another         0.17 s    0.054 s      25.0 s       0.523 s
    docs/sql.md, 31 queries: median 0.042 s, slowest 0.098 s, 31/31 under 0.2 s (whole process median 0.16 s)

Compaction makes the queries 8-20x faster. Every query answers in under 0.15 s inside a cold process,
and its first answer comes 200-580x sooner than JSONL + pandas's. A whole `pidistill sql` process takes
0.16-0.26 s, of which about 0.10 s is importing DuckDB (a bare `pidistill sql "select 1"`: 0.14 s).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from storage.schema import TABLES  # noqa: E402
from storage.writer import shard_path, write_rows  # noqa: E402

ARMS = ("no-retry", "retry-feedback", "double-sample")
SEEDS = (0, 1, 2)
ROUNDS = (1, 2)
LEVELS = (0, 1, 2, 3)
LEVEL_SHARE = (0.55, 0.22, 0.13, 0.10)  # first tries, then fewer retries at each level
TRAIN_STAGES = ("sample", "verify")  # one stages file per level each; filter, train, evaluate once


# ----------------------------------------------------------------------------- the history


def texts() -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in (ROOT.parent / "shared/data/gsm8k/train.jsonl").open()]
    return [r["question"] for r in rows], [r["answer"] for r in rows]


def attempts_table(run: str, arm: str, seed: int, rnd: int, phase: str, n: int, rng: np.random.Generator, qs, ans):
    """`n` attempts of one (run, arm, seed, round, phase), retry levels and parents like a real round."""
    if phase == "train":
        levels = rng.choice(len(LEVELS), size=n, p=LEVEL_SHARE).astype(np.int32)
    else:
        levels = np.zeros(n, dtype=np.int32)
    problems = rng.integers(0, 500, size=n)
    passed = rng.random(n) < (0.35 + 0.05 * rnd + 0.08 * levels)
    pick = rng.integers(0, len(qs), size=n)
    ids = [f"{run}-{arm}-{seed}-{rnd}-{phase}-{i}" for i in range(n)]
    parents = [ids[i - 1] if levels[i] > 0 and i > 0 else None for i in range(n)]
    prompts = [qs[j] + "\nLet's think step by step." for j in pick]
    completions = [ans[j] for j in pick]
    accepted = passed if phase == "train" else np.zeros(n, dtype=bool)
    reasons = np.where(passed, None, np.where(rng.random(n) < 0.8, "failed", "duplicate"))
    now = datetime.now(UTC)
    n_tokens = np.array([len(c) // 4 for c in completions], dtype=np.int32)
    cols = {
        "run_id": [run] * n,
        "arm": [arm] * n,
        "seed": np.full(n, seed, dtype=np.int32),
        "round": np.full(n, rnd, dtype=np.int32),
        "phase": [phase] * n,
        "problem_id": [f"gsm8k-{p}" for p in problems],
        "attempt_id": ids,
        "attempt_idx": levels,
        "sample_idx": np.zeros(n, dtype=np.int32),
        "parent_id": parents,
        "model_ref": [f"{run}/{arm}/seed{seed}/round{rnd - 1}"] * n,
        "sampler": ["hf"] * n,
        "temperature": np.full(n, 0.8),
        "pi_kind": [("verifier_feedback" if lv else None) for lv in levels],
        "pi_text": [("Your answer was wrong." if lv else None) for lv in levels],
        "prompt": prompts,
        "teacher_prompt": [None] * n,
        "completion": completions,
        "status": np.where(passed, "pass", "fail"),
        "passed": passed,
        "score": passed.astype(float),
        "feedback": np.where(passed, "", "expected 42"),
        "n_prompt_tokens": np.array([len(p) // 4 for p in prompts], dtype=np.int32),
        "n_completion_tokens": n_tokens,
        "accepted": accepted if phase == "train" else [None] * n,
        "reject_reason": reasons if phase == "train" else [None] * n,
        "created_at": [now] * n,
        "fail_reason": [None] * n,
        "flags": [None] * n,
        "copies_pi": [(False if lv else None) for lv in levels],
        "pi_overlap": [None] * n,
        **provenance_columns(run, arm, seed, rnd, pick, n_tokens, rng),
    }
    return pa.table(cols, schema=TABLES["attempts"])


def provenance_columns(run: str, arm: str, seed: int, rnd: int, pick, n_tokens: np.ndarray, rng) -> dict:
    """Token ids as many as n_completion_tokens, Zipf-distributed over a 49k vocabulary like real text (zstd
    keeps them at about 1.5 bytes a token), hashes, seeds, keys and one policy digest per round's model."""
    n = len(n_tokens)
    offsets = np.concatenate([[0], np.cumsum(n_tokens)]).astype(np.int32)
    values = (rng.zipf(1.1, size=int(offsets[-1])) % 49_152).astype(np.int32)
    return {
        "prompt_token_sha": [f"{j:016x}" for j in pick],
        "completion_token_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values)),
        "completion_token_sha": [f"{x:016x}" for x in rng.integers(0, 2**63, size=n)],
        "sampler_seed": rng.integers(0, 2**32, size=n),
        "sample_key": [f"chunk {i // 64} prompt {i % 64 // 4} of 16 sample {i % 4} of 4" for i in range(n)],
        "policy_digest": [f"{run}{arm}{seed}{rnd}"[:16]] * n,
    }


def run_row(run: str, now: datetime) -> dict:
    return {
        "run_id": run,
        "experiment": "star-try-again",
        "config_json": "{}",
        "config_hash": "h",
        "code_version": "bench",
        "data_hash": "d",
        "started_at": now,
        "finished_at": now,
        "status": "completed",
        "error": None,
        "smoke": False,
    }


def key_rows(run: str, arm: str, seed: int, rnd: int) -> dict:
    return {"run_id": run, "arm": arm, "seed": seed, "round": rnd}


def build(home: Path, n_runs: int, n_attempts: int, seed: int = 0) -> dict:
    """Write the history; returns counts (files, rows, bytes, seconds)."""
    rng = np.random.default_rng(seed)
    qs, ans = texts()
    per_key = max(1, n_attempts // (n_runs * len(ARMS) * len(SEEDS) * len(ROUNDS)))
    t0, files, rows = time.perf_counter(), 0, 0
    now = datetime.now(UTC)
    for r in range(n_runs):
        run = f"bench-{r:03d}"
        for arm in ARMS:
            for s in SEEDS:
                for rnd in ROUNDS:
                    k = key_rows(run, arm, s, rnd)
                    n_eval = per_key // 6
                    train = attempts_table(run, arm, s, rnd, "train", per_key - n_eval, rng, qs, ans)
                    evals = attempts_table(run, arm, s, rnd, "eval", n_eval, rng, qs, ans)
                    write_rows(shard_path(home, run, "attempts", arm, s, rnd, "train"), train, "attempts")
                    write_rows(shard_path(home, run, "attempts", arm, s, rnd, "eval"), evals, "attempts")
                    acc = train.filter(pa.compute.equal(train["accepted"], True))
                    sft = [
                        {**k, "problem_id": p, "attempt_id": a, "prompt": pr, "completion": c}
                        for p, a, pr, c in zip(
                            acc["problem_id"].to_pylist(),
                            acc["attempt_id"].to_pylist(),
                            acc["prompt"].to_pylist(),
                            acc["completion"].to_pylist(),
                        )
                    ]
                    write_rows(shard_path(home, run, "sft_examples", arm, s, rnd, "train"), sft, "sft_examples")
                    ev = [
                        {**k, "problem_id": f"gsm8k-{p}", "model_ref": "m", "n": 4, "n_pass": int(rng.integers(0, 5))}
                        for p in range(100)
                    ]
                    write_rows(shard_path(home, run, "evaluations", arm, s, rnd, "eval"), ev, "evaluations")
                    tr = [
                        {
                            **k,
                            "method": "sft",
                            "init_model_ref": "m",
                            "n_examples": len(sft),
                            "steps": 10,
                            "lr": 1e-5,
                            "final_loss": 0.5,
                            "checkpoint": "c",
                            "seconds": 60.0,
                        }
                    ]
                    write_rows(shard_path(home, run, "trainings", arm, s, rnd, "train"), tr, "trainings")
                    stages = [(st, lv) for st in TRAIN_STAGES for lv in LEVELS] + [
                        ("filter", 0),
                        ("train", 0),
                        ("evaluate", 0),
                    ]
                    for st, lv in stages:
                        row = {
                            **k,
                            "stage": st,
                            "attempt_idx": lv,
                            "model_ref": "m",
                            "n_items": 100,
                            "n_prompt_tokens": 1000,
                            "n_completion_tokens": 1000,
                            "verifier_calls": 100,
                            "seconds": 1.0,
                            "cpu_seconds": 1.0,
                            "started_at": now,
                            "shard": None,
                            "worker": "bench",
                        }
                        write_rows(shard_path(home, run, "stages", arm, s, rnd, f"{st}-{lv}"), [row], "stages")
                    rows += train.num_rows + evals.num_rows
        write_rows(home / run / "runs" / "run.parquet", [run_row(run, now)], "runs")
    files = sum(1 for _ in home.rglob("*.parquet"))
    size = sum(f.stat().st_size for f in home.rglob("*.parquet"))
    return {"files": files, "attempts": rows, "bytes": size, "seconds": time.perf_counter() - t0}


def dump_jsonl(home: Path, out: Path) -> int:
    """The same attempts as per-step JSONL dumps (one per run, arm, seed, round), as RL frameworks write."""
    import pyarrow.parquet as pq

    n = 0
    for f in sorted(home.glob("*/attempts/arm=*/seed=*/round=*/*.parquet")):
        run, _, arm, seed, rnd = f.parts[-6], f.parts[-5], f.parts[-4], f.parts[-3], f.parts[-2]
        dest = out / run / f"{arm}-{seed}-{rnd}.jsonl"
        dest.parent.mkdir(parents=True, exist_ok=True)
        df = pq.read_table(f).to_pandas()
        df["created_at"] = df["created_at"].astype(str)
        with dest.open("a") as fh:
            df.to_json(fh, orient="records", lines=True)
        n += 1
    return n


# ----------------------------------------------------------------------------- the questions

ONE_RUN = "bench-000"
QUERIES: dict[str, str] = {
    "pass rate by run/arm/seed/round": """
        select run_id, arm, seed, round, avg(passed::int) as pass_rate, count(*) as n
        from attempts where phase = 'train' group by all order by all""",
    "reject reasons": """
        select arm, reject_reason, count(*) as n from attempts
        where phase = 'train' and not accepted group by all order by all""",
    "retries joined to failed parents": """
        select r.arm, r.attempt_idx, count(*) as retries, avg(r.passed::int) as fixed
        from attempts r join attempts f on r.parent_id = f.attempt_id
        where r.attempt_idx > 0 and not f.passed group by all order by all""",
    "one run by retry level": f"""
        select arm, attempt_idx, count(*) as n, avg(passed::int) as pass_rate
        from attempts where run_id = '{ONE_RUN}' and phase = 'train' group by all order by all""",
    "solved by one arm, not another": f"""
        select count(*) as n from (
          select problem_id from attempts where run_id = '{ONE_RUN}' and arm = 'retry-feedback' and passed
          except
          select problem_id from attempts where run_id = '{ONE_RUN}' and arm = 'no-retry' and passed)""",
}


def pandas_answer(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """The same questions, as a pandas user writes them."""
    train = df[df.phase == "train"]
    if name == "pass rate by run/arm/seed/round":
        return train.groupby(["run_id", "arm", "seed", "round"]).passed.agg(["mean", "size"]).reset_index()
    if name == "reject reasons":
        return train[train.accepted == False].groupby(["arm", "reject_reason"]).size().reset_index()  # noqa: E712
    if name == "retries joined to failed parents":
        j = train[train.attempt_idx > 0].merge(df, left_on="parent_id", right_on="attempt_id", suffixes=("", "_f"))
        j = j[j.passed_f == False]  # noqa: E712
        return j.groupby(["arm", "attempt_idx"]).passed.agg(["size", "mean"]).reset_index()
    if name == "one run by retry level":
        one = train[train.run_id == ONE_RUN]
        return one.groupby(["arm", "attempt_idx"]).passed.agg(["size", "mean"]).reset_index()
    one = df[(df.run_id == ONE_RUN) & (df.passed == True)]  # noqa: E712
    a = set(one[one.arm == "retry-feedback"].problem_id)
    b = set(one[one.arm == "no-retry"].problem_id)
    return pd.DataFrame({"n": [len(a - b)]})


def load_jsonl(root: Path) -> pd.DataFrame:
    return pd.concat(
        [pd.read_json(f, lines=True) for f in sorted(root.rglob("*.jsonl"))],
        ignore_index=True,
    )


def timed_subprocess(argv: list[str], env: dict) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed: {out.stderr[-800:]}")
    return time.perf_counter() - t, out.stdout


# What `pidistill sql` does after its imports: open the catalog (read lock included), run, fetch.
QUERY_ONLY = """
import sys, time
from storage.catalog import connect
t = time.perf_counter()
with connect() as con:
    con.sql(sys.argv[1]).fetchall()
print(time.perf_counter() - t)
"""


def cold(sql: str, env: dict, repeat: int) -> tuple[float, float]:
    """Median wall time of a whole `pidistill sql` process, and of the query inside a new process."""
    procs, inner = [], []
    for _ in range(repeat):
        s, _out = timed_subprocess([sys.executable, "-m", "cli.entry", "sql", " ".join(sql.split())], env)
        procs.append(s)
        _s, out = timed_subprocess([sys.executable, "-c", QUERY_ONLY, sql], env)
        inner.append(float(out.strip().splitlines()[-1]))
    return statistics.median(procs), statistics.median(inner)


def cookbook() -> list[str]:
    """docs/sql.md's queries, filled in for one run of the history."""
    import re

    text = (ROOT / "docs" / "sql.md").read_text()
    return [
        b.replace("<run id>", ONE_RUN).replace("<config hash>", "h")
        for b in re.findall(r"```sql\n(.*?)```", text, re.S)
    ]


def measure(label: str, env: dict, repeat: int, frame: pd.DataFrame, load_s: float) -> dict[str, float]:
    print(f"\n{label}")
    print(
        f"{'question':<34} {'sql cold process':>16} {'sql query':>10} {'pandas 1st':>11} {'pandas again':>13}  ratio(1st/query)"
    )
    times = {}
    for name, sql in QUERIES.items():
        proc, q = cold(sql, env, repeat)
        t = time.perf_counter()
        pandas_answer(name, frame)
        again = time.perf_counter() - t
        first = load_s + again
        times[name] = q
        print(f"{name:<34} {proc:>14.2f} s {q:>8.3f} s {first:>9.1f} s {again:>11.3f} s  {first / q:>6.1f}x")
    book = [cold(sql, env, 1) for sql in cookbook()]
    qs = sorted(q for _, q in book)
    print(
        f"docs/sql.md, {len(book)} queries: query in a cold process median {statistics.median(qs):.3f} s, "
        f"slowest {qs[-1]:.3f} s, {sum(q < 0.2 for q in qs)}/{len(qs)} under 0.2 s; whole process median "
        f"{statistics.median(p for p, _ in book):.2f} s"
    )
    return times


def compact_all(home: Path) -> None:
    """Compact every run as it would be when it completes; prints the cost per run."""
    from storage.compact import compact_run

    runs = sorted(p.name for p in home.iterdir() if (p / "runs").is_dir() and not p.name.startswith("_"))
    secs, before, after, files = [], 0, 0, 0
    for run in runs:
        t = time.perf_counter()
        done = compact_run(home, run)
        secs.append(time.perf_counter() - t)
        before += sum(d.bytes_before for d in done)
        after += sum(d.bytes_after for d in done)
        files += sum(d.files for d in done)
    if not files:
        print("\ncompaction: every run already compacted")
        return
    left = sum(1 for _ in home.rglob("*.parquet"))
    print(
        f"\ncompaction of {len(runs)} runs: {files:,} shards -> {left:,} files in the home; per run median "
        f"{statistics.median(secs):.2f} s (max {max(secs):.2f} s); {before / 2**20:.0f} -> {after / 2**20:.0f} MiB"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attempts", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--repeat", type=int, default=3, help="cold processes per query (median reported)")
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the history here and keep it")
    args = ap.parse_args()

    home = args.keep or Path(tempfile.mkdtemp(prefix="pidistill-sql-scale-"))
    env = {**os.environ, "PIDISTILL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    try:
        if not any(home.glob("*/attempts")):
            stats = build(home, args.runs, args.attempts)
            print(
                f"history: {stats['attempts']:,} attempts in {args.runs} runs, {stats['files']:,} parquet files, "
                f"{stats['bytes'] / 2**20:.0f} MiB, written in {stats['seconds']:.0f} s"
            )
        else:
            print(f"history: reusing {home} ({sum(1 for _ in home.rglob('*.parquet')):,} parquet files)")
        jsonl = home.parent / (home.name + "-jsonl")
        if not jsonl.exists():
            dump_jsonl(home, jsonl)
        subprocess.run(
            [sys.executable, "-c", "from storage.catalog import ensure_catalog; ensure_catalog()"],
            env=env,
            cwd=ROOT,
            check=True,
        )
        print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
        t = time.perf_counter()
        frame = load_jsonl(jsonl)
        load_s = time.perf_counter() - t
        print(f"JSONL + pandas: loading {len(frame):,} rows takes {load_s:.1f} s")
        before = measure(
            "before compaction (one file per run, table, arm, seed, round, stage)", env, args.repeat, frame, load_s
        )
        compact_all(home)
        after = measure("after compaction (one file per run and table)", env, args.repeat, frame, load_s)
        print("\nspeed-up of the query from compaction: " + ", ".join(f"{before[k] / after[k]:.1f}x" for k in QUERIES))
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)
            shutil.rmtree(home.parent / (home.name + "-jsonl"), ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
