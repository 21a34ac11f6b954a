"""Orchestration overhead: wall time of one demo round through Prefect vs its stages' own compute.

    .venv/bin/python benchmarks/orchestration_overhead.py            # the demo's retry arm, round 1
    .venv/bin/python benchmarks/orchestration_overhead.py --set sampling.n=8 --rounds 2

A round runs as a Prefect subflow of ~10 task runs (select-problems, sample/verify per
retry level, filter, train, evaluate). Each stage measures its own work (`stages` table,
perf_counter inside the task body: model loading, sampling, sandboxed verification,
parquet writes, training); everything else in the round's wall time is orchestration:
Prefect's flow/task-run bookkeeping against its API server, the resume checkpoints,
logging. Target: overhead < 3 % of the round.

The Prefect server (ephemeral unless PREFECT_API_URL is set) and the tiny model are
started/built before timing: they are paid once per process, not per round, and are
printed separately. The rounds run twice: as pidistill runs them (a subflow per round, so
the UI shows one flow run per round) and with the round's body called inline in one parent
flow run, which separates the subflow's fixed cost (~0.4 s per round: a flow run created,
its states set, a client made) from the per-task cost (~20 ms per task run).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cli.env import offline_defaults

offline_defaults()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", default="retry", help="arm of the demo preset to run (default: retry, the most stages)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds to time (each is measured)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    args = ap.parse_args()
    if "PIDISTILL_HOME" not in os.environ:
        os.environ["PIDISTILL_HOME"] = tempfile.mkdtemp(prefix="pidistill-overhead-")

    from prefect import flow

    from experiments.config import load_config
    from flows.round import round_flow
    from storage.catalog import query
    from storage.home import home_dir
    from tasks.runs import new_run_id, resolve_model

    cfg = load_config("demo", [*args.set, "seeds=[0]", f"rounds={args.rounds}"]).for_arm(args.arm)
    t0 = time.perf_counter()
    base = resolve_model.fn(cfg.model)
    model_s = time.perf_counter() - t0

    @flow(name="warm-up")
    def warm_up() -> None:
        pass

    t0 = time.perf_counter()
    warm_up()
    server_s = time.perf_counter() - t0
    print(f"one-time: tiny model {model_s:.1f} s, Prefect start-up {server_s:.1f} s; home {home_dir()}")

    def timed_rounds(label: str, run_round) -> tuple[float, float]:
        run_id, ref = new_run_id(f"overhead-{label}"), base
        walls, works = 0.0, 0.0
        for r in range(1, args.rounds + 1):
            t0 = time.perf_counter()
            ref = run_round(run_id, r, ref)
            wall = time.perf_counter() - t0
            st = query(
                "SELECT stage, count(*) n, sum(seconds) s FROM stages WHERE run_id = $run_id AND round = $round "
                "GROUP BY stage ORDER BY s DESC",
                params={"run_id": run_id, "round": r},
            )
            work = float(st.s.sum())
            walls, works = walls + wall, works + work
            parts = ", ".join(
                f"{row.stage} {row.s:.1f}s" + (f" (x{row.n})" if row.n > 1 else "") for row in st.itertuples()
            )
            print(
                f"[{label}] round {r}: wall {wall:.2f} s, stages' own work {work:.2f} s [{parts}]; "
                f"overhead {wall - work:.2f} s = {100 * (wall - work) / wall:.2f} %"
            )
        return walls, works

    # As pidistill runs it: each round a Prefect subflow (one flow run per round in the UI).
    sub_wall, sub_work = timed_rounds(
        "subflow", lambda run_id, r, ref: round_flow(cfg, run_id, args.arm, 0, r, ref, base)
    )

    # The same rounds with the round's body called inside one parent flow run: the tasks' own cost only.
    @flow(name="overhead-inline")
    def inline() -> tuple[float, float]:
        return timed_rounds("inline", lambda run_id, r, ref: round_flow.fn(cfg, run_id, args.arm, 0, r, ref, base))

    in_wall, in_work = inline()
    for label, wall, work in (("round subflows", sub_wall, sub_work), ("tasks only (inline)", in_wall, in_work)):
        print(
            f"{label:>20}: {wall:6.1f} s wall vs {work:6.1f} s of stage work: overhead {100 * (wall - work) / wall:5.2f} % "
            f"(target < 3 %), ratio wall/work {wall / work:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
