"""Concurrent chains (issue 19): the demo preset with `scale.chains` 1 vs N, wall time and attempt hashes.

    .venv/bin/python benchmarks/chains.py                  # demo --smoke, chains 1 vs 2
    .venv/bin/python benchmarks/chains.py --no-smoke --set seeds=[0,1] --set rounds=1

Each run is a fresh `pidistill run demo --smoke` process in one temporary home (the tiny model is
built once beforehand and shared through PIDISTILL_MODEL_CACHE), both with `scale.torch_threads=1`
so that N chains do not oversubscribe the cores and both runs compute the same reductions. Prints
each run's wall time, the ratio, and a hash of every attempt (arm, seed, round, problem, level,
prompt, completion, verdict, decision): the same hash means the same experiment.

Measured 2026-12-04 on the 2-CPU VM (load ~1), chains 1 vs 2, both with scale.torch_threads=1:

    demo --smoke (3 arms x 1 seed x 1 round, 736 attempts)     27.2 s vs 32.2 s: 0.85x, attempts identical
    demo --no-smoke --set seeds=[0,1] --set rounds=1 (6 chains,  75.2 s vs 56.4 s: 1.33x, attempts identical
      9,384 attempts)

At smoke scale a chain's work is smaller than starting a worker process (spawn, then importing torch,
transformers and Prefect: several seconds), so two chains lose; at the demo's own scale they win. On a
machine with a GPU per chain (`scale.gpus_per_chain`) the ratio approaches the number of chains.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ATTEMPTS_HASH = """
select count(*) as attempts, md5(string_agg(
    concat_ws('|', arm, seed, round, phase, problem_id, attempt_idx, sample_idx, prompt, completion, status,
              passed, accepted, reject_reason), '\n' order by arm, seed, round, phase, problem_id, attempt_idx,
              sample_idx, prompt, completion)) as digest
from attempts where run_id = $run_id
"""


def run(chains: int, sets: list[str], env: dict, smoke: bool) -> float:
    argv = [
        sys.executable,
        "-m",
        "cli.main",
        "run",
        "demo",
        *(["--smoke"] if smoke else []),
        "--run-id",
        f"chains-{chains}",
    ]
    for s in ["scale.torch_threads=1", f"scale.chains={chains}", *sets]:
        argv += ["--set", s]
    t = time.perf_counter()
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"chains={chains} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chains", type=int, default=2, help="chains at once in the concurrent run")
    ap.add_argument("--set", action="append", default=[], help="more config overrides, as pidistill run --set")
    ap.add_argument("--no-smoke", action="store_true", help="the demo at its own scale (3 arms x 3 seeds x 2 rounds)")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="pidistill-chains-"))
    env = {**os.environ, "PIDISTILL_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.setdefault("PIDISTILL_MODEL_CACHE", str(Path(tempfile.gettempdir()) / "pidistill-models"))
    subprocess.run([sys.executable, "-m", "cli.main", "bootstrap-model"], env=env, cwd=ROOT, check=True)
    print(f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs; home {home}")
    walls = {n: run(n, args.set, env, not args.no_smoke) for n in (1, args.chains)}

    os.environ["PIDISTILL_HOME"] = str(home)
    from storage.catalog import query

    print(f"{'scale.chains':>12} {'wall':>8} {'attempts':>9}  attempts digest")
    digests = {}
    for n, wall in walls.items():
        row = query(ATTEMPTS_HASH, params={"run_id": f"chains-{n}"}).iloc[0]
        digests[n] = row.digest
        print(f"{n:>12} {wall:>7.1f}s {row.attempts:>9}  {row.digest}")
    same = "identical" if digests[1] == digests[args.chains] else "DIFFERENT"
    print(f"\nwall time ratio (1 chain / {args.chains}): {walls[1] / walls[args.chains]:.2f}x; attempts {same}")
    return 0 if same == "identical" else 1


if __name__ == "__main__":
    sys.exit(main())
