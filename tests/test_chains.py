"""Concurrent chains (`scale.chains`, flows/chains.py): arm x seed chains in their own processes give the
attempts a serial run gives, each chain a Prefect task run whose rounds are its subflow runs. Real runs
of the tiny model, a real Prefect server, real worker processes."""

from __future__ import annotations

import os

import pytest

from experiments.config import ConfigError, load_config
from models.devices import device_sets
from storage.catalog import query
from tasks.runs import PreflightError, preflight

CFG = [
    "seeds=[0, 1]",
    "rounds=1",
    "domain.train_size=8",
    "domain.eval_size=12",
    "sampling.n=2",
    "train.epochs=1",
    "train.batch_size=4",
    "retry.max_retries=1",
    "retry.feedback=previous_attempt",
    "arms=[{name: rft, set: {retry.max_retries: 0}}, {name: retry}]",
    "scale.torch_threads=1",  # the same reductions in every process, and 2 chains on 2 cores do not thrash
]
COMPARED = (
    "arm, seed, round, phase, problem_id, attempt_idx, sample_idx, parent_id is null as first, prompt, completion, "
    "status, passed, score, accepted, reject_reason"
)


@pytest.mark.slow
def test_concurrent_chains_give_the_attempts_of_serial_chains(tiny_model, pidistill_home):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentTaskRunId,
    )

    from flows.experiment import experiment_flow

    experiment_flow(load_config("demo", CFG), run_id="serial")
    # The workers report to the API this process uses (here a temporary server), not servers of their own.
    state = experiment_flow(load_config("demo", [*CFG, "scale.chains=2"]), run_id="chains", return_state=True)
    assert state.is_completed()

    def rows(run_id: str, table: str, cols: str) -> list:
        return query(f"select {cols} from {table} where run_id = '{run_id}' order by all").values.tolist()

    assert rows("chains", "attempts", COMPARED) == rows("serial", "attempts", COMPARED)
    assert len(rows("chains", "attempts", "1")) > 40
    for table, cols in [
        ("evaluations", "arm, seed, round, problem_id, n, n_pass"),
        ("sft_examples", "arm, seed, round, problem_id, prompt, completion"),
        ("trainings", "arm, seed, round, n_examples, steps"),
    ]:
        assert rows("chains", table, cols) == rows("serial", table, cols), table
    # The rounds ran in two worker processes, not the driver's; round 0 (base evaluation) in the driver.
    workers = query(
        "select round, count(distinct worker) n from stages where run_id = 'chains' group by all order by all"
    ).values.tolist()
    assert workers == [[0, 1], [1, 2]]
    driver = query("select distinct worker from stages where run_id = 'chains' and round = 0").worker.tolist()
    assert driver == [f"{os.uname().nodename}:{os.getpid()}"]
    assert query("select status from runs where run_id = 'chains'").status.tolist() == ["completed"]

    # In the UI: four chain task runs of the experiment, each with its round as a subflow run (Prefect links a
    # subflow to the experiment through a task run standing for it, whose parent is the chain task run).
    with get_client(sync_client=True) as client:
        experiment = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        runs = client.read_task_runs(flow_run_filter=experiment)
        chains = [t for t in runs if t.name.startswith("chain ")]
        subflows = {t.id: t for t in runs if t.name.startswith("round-")}
        rounds = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_task_run_id=FlowRunFilterParentTaskRunId(any_=list(subflows)))
        )
    assert sorted(t.name for t in chains) == [
        "chain retry seed=0",
        "chain retry seed=1",
        "chain rft seed=0",
        "chain rft seed=1",
    ]
    assert all(t.state.is_completed() for t in chains)
    assert sorted(r.name for r in rounds) == [
        "retry seed=0 round=1",
        "retry seed=1 round=1",
        "rft seed=0 round=1",
        "rft seed=1 round=1",
    ]
    chain_of = [subflows[r.parent_task_run_id].task_inputs["__parents__"][0].id for r in rounds]
    assert sorted(chain_of) == sorted(t.id for t in chains)  # each chain's round under it


def test_chains_pinned_to_gpus_must_fit_the_gpus_there_are():
    assert device_sets(4, 0, []) is None  # not pinned: CPU
    assert device_sets(4, 2, [str(i) for i in range(8)]) == ["0,1", "2,3", "4,5", "6,7"]
    assert device_sets(2, 1, ["3", "5"]) == ["3", "5"]  # of the devices this process sees
    with pytest.raises(ConfigError, match=r"scale.chains=3 x scale.gpus_per_chain=2 needs 6 GPUs; this process sees 4"):
        device_sets(3, 2, ["0", "1", "2", "3"])


def test_preflight_refuses_chains_that_cannot_run(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(PreflightError, match="needs 4 GPUs; this process sees 2"):
        preflight(load_config("demo", ["scale.chains=2", "scale.gpus_per_chain=2"]))
    # on Ray, Ray places the chains' GPUs (a chain waits for a node that has them)
    preflight(load_config("demo", ["scale.chains=2", "scale.gpus_per_chain=2", "scale.executor=ray"]))


def test_chains_leave_the_config_hash_alone():
    """Where chains run says nothing about what they compute: a run resumes with another scale.chains."""
    assert load_config("demo", ["scale.chains=4"]).config_hash() == load_config("demo").config_hash()
