"""What every column of every table and view means: the catalog writes these as DuckDB comments.

    >>> pidistill sql "select table_name, column_name, comment from duckdb_columns() where table_name = 'summary'"

A column means the same in every table that has it (`COLUMNS`); where a table's column needs its own
words, `TABLE_COLUMNS` says them. `tests/test_storage.py` checks that no column goes undocumented.
"""

from __future__ import annotations

TABLE_DOCS = {
    "runs": "One row per experiment run: its config, lineage and status (rewritten as the run goes).",
    "attempts": "Every completion ever sampled: train tries and retries, evaluation samples, diagnoses, OPSD "
    "rollouts; with its verdict and (train phase) whether it became SFT data and why not.",
    "sft_examples": "What each round trained on: the accepted attempts as prompt/completion pairs, without PI; "
    "none for a round that trained nothing (method none or opsd, fewer than train.min_examples).",
    "trainings": "One row per training stage (arm x seed x round): method, start model, steps, loss, checkpoint.",
    "evaluations": "Held-out evaluation: per arm x seed x round x problem, samples drawn and how many passed.",
    "stages": "Compute per stage (select-problems, sample, diagnose, verify, filter, train, evaluate): items, "
    "tokens, seconds.",
    "nightly_arms": "One row per nightly run x preset x arm: Δpp vs base with its 95 % interval.",
    "arm_results": "One row per run x arm, from the run's report: Δpp vs base and vs the reference arm with "
    "95 % paired-bootstrap intervals and p-values.",
    "summary": "One row per run x arm: base and final pass@1, Δpp with 95 % interval and p-value, smoke flag, "
    "lineage. Use this, not attempts, for 'did training help'.",
    "compute": "Compute per run x arm (all seeds and rounds): samples, tokens, verifier calls, seconds.",
    "nightly": "Each nightly arm next to the previous night of the same experiment, config hash and arm, "
    "with a regression / improvement / within-ci verdict.",
}

# Columns that mean the same wherever they appear.
COLUMNS = {
    "run_id": "The experiment run (pidistill run --run-id; folder under PIDISTILL_HOME).",
    "arm": "The arm of the experiment (config arms[].name).",
    "seed": "The seed of this chain of rounds.",
    "round": "Round number: 0 = the base model (evaluation only), 1.. = after that many rounds of training.",
    "experiment": "The experiment's name (its preset).",
    "config_hash": "Hash of everything in the config that can change a result (not description or smoke).",
    "code_version": "git commit of pidistill that ran it (-dirty: with uncommitted changes).",
    "data_hash": "Hash of the problems every arm draws from (the domain's data).",
    "problem_id": "The problem (stable across runs: derived from the dataset's id or content).",
    "attempt_id": "The attempt (unique; attempts.attempt_id).",
    "attempt_idx": "0 = first try, k = retry level k (a chain's k-th follow-up; a fan's are all level 1).",
    "model_ref": "The model that produced it: an HF id, a folder, or a round's checkpoint.",
    "prompt": "Exactly the text the model was given: a chat model's rendered template, markers included.",
    "completion": "Exactly what the model wrote (after the stop sequence is cut).",
    "n_prompt_tokens": "Prompt tokens.",
    "n_completion_tokens": "Completion tokens.",
    "status": "pass | fail | error | timeout (error: the verifier failed, not the attempt).",
    "seconds": "Wall-clock seconds.",
    "created_at": "When the row was written (UTC).",
    "started_at": "When it started (UTC).",
    "smoke": "Run with --smoke: micro scale (tiny model, few problems), a check that it runs, not its numbers.",
    "seeds": "Seeds averaged over.",
    "rounds": "The arm's last round.",
    "problems": "Held-out evaluation problems.",
    "base_pass1": "pass@1 of the base model (round 0), averaged over seeds.",
    "final_pass1": "pass@1 after the last round, averaged over seeds.",
    "delta_pp": "final_pass1 - base_pass1 in percentage points (paired by seed and problem).",
    "ci_low_pp": "Low end of delta_pp's 95 % paired-bootstrap interval (seeds and problems resampled).",
    "ci_high_pp": "High end of delta_pp's 95 % interval.",
    "p_value": "Two-sided p-value of 'no change' from the same bootstrap.",
    "preset": "The preset the nightly ran.",
    "nightly_id": "One nightly flow run (every preset it ran shares it).",
    "nightly_started_at": "When that nightly started (UTC); orders nights.",
}

TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "runs": {
        "config_json": "The full config as run (canonical JSON): json_extract(config_json, '$.train.lr').",
        "finished_at": "When the run completed or failed (UTC); NULL while running.",
        "status": "running | completed | failed.",
        "error": "Why a failed run failed (one line).",
        "smoke": "Run with --smoke (micro scale); NULL for runs written before this column existed.",
    },
    "attempts": {
        "phase": "train (sampled for SFT data) | eval (held-out evaluation) | diagnosis | opsd (rollout).",
        "sample_idx": "Which of the n samples drawn for this prompt (OPSD: the training step).",
        "parent_id": "The failed attempt this follow-up (or diagnosis) answers: in a chain its last failed link, "
        "in a fan the first try; NULL for a first try.",
        "sampler": "hf | vllm: the sampling backend.",
        "temperature": "Sampling temperature (0 = greedy).",
        "pi_kind": "The privileged information in the prompt (retry.feedback / train.opsd.pi); NULL: none.",
        "pi_text": "The privileged information's text as inserted.",
        "teacher_prompt": "OPSD rollouts: what the teacher saw (the prompt plus PI).",
        "passed": "The verifier's pass/fail (status = 'pass').",
        "score": "Graded score in [0, 1] (the share of tests passed for code; 0/1 otherwise).",
        "feedback": "The verifier's feedback (what a verifier_feedback retry shows the model).",
        "accepted": "Train phase: became SFT data. NULL outside the train phase.",
        "fail_reason": "Why a fail failed, where it can be said in a word: no_answer (nothing in the answer "
        "format), unclosed_think (a <think> block that never ended); NULL otherwise.",
        "flags": "Code domains: what the program reached for that a test harness runs on, comma-separated "
        "(frames, gc, builtins, exit, fds, trace, eq, lowlevel; domains/code/flags.py), and what it did when it "
        "ran (non_plain: returned something not plain data; channel: wrote on the harness's report; damage: "
        "left its sandbox broken; extract: its text could not be read as code), pass or fail; NULL: none.",
        "reject_reason": "Train phase, not accepted: failed | no_answer | unclosed_think | timeout | verifier_error | "
        "below_threshold | copies_pi | "
        "frontier_too_hard | frontier_too_easy | duplicate | max_per_problem.",
        "copies_pi": "The completion copies the PI of its own prompt (domains/pi_copy.py): repeats a reference "
        "program or solution (pi_overlap >= 0.5), takes a wrong-answer hint's answer, or reaches a given answer "
        "through an arithmetic step that does not hold. NULL: no PI in its prompt (first tries, evaluation, "
        "OPSD rollouts).",
        "pi_overlap": "Share of the PI text's token 8-grams the completion repeats verbatim (case, spacing and "
        "prose punctuation ignored). NULL: no PI in its prompt, or a PI shorter than 8 tokens (a bare answer).",
        # Provenance (models/sampling/base.py): NULL in runs written before these columns existed.
        "prompt_token_sha": "The prompt's token ids as the sampler fed them, hashed: the first 16 hex digits of "
        "sha256 over the ids joined with ':'. Re-tokenizing prompt (models.prompts.prompt_ids) must give it.",
        "completion_token_ids": "The token ids the model generated, as sampled: n_completion_tokens of them, eos and "
        "a stop string's tokens included (completion is their text, cut at the stop string). Re-score these.",
        "completion_token_sha": "completion_token_ids hashed as prompt_token_sha: "
        "left(sha256(array_to_string(completion_token_ids, ':')), 16).",
        "sampler_seed": "The seed that determined the sample: vLLM, its prompt's request seed; HF, its chunk's (one "
        "generate call over several prompts). Sampler.resample repeats that draw (docs/sql.md).",
        "sample_key": "Its place in that seed's draw: 'request i sample d of n' (vLLM) | 'chunk c prompt j of P "
        "sample d of n' (HF: the P prompts of the chunk are the attempts sharing sampler_seed in this stage).",
        "policy_digest": "The weights sampled from (models/policy.py): a folder's weight files, sha256 (16 hex); "
        "hf:<commit> for a hub id; <adapter's>+<base's> for a LoRA adapter. NULL: not known (OPSD rollouts: the "
        "student mid-training).",
    },
    "sft_examples": {
        "prompt": "The prompt trained on: the original question without PI, rendered as the trained model is prompted.",
        "completion": "The completion trained on (the accepted attempt's).",
    },
    "trainings": {
        "method": "sft | opsd | none.",
        "init_model_ref": "The model training started from (the previous round's, or the base).",
        "n_examples": "Examples trained on (OPSD: rollouts); 0 when the round trained nothing (method none, too few).",
        "steps": "Optimizer steps.",
        "lr": "Learning rate.",
        "final_loss": "Loss of the last step.",
        "checkpoint": "Where the trained model was saved (the next round's model_ref).",
    },
    "evaluations": {
        "n": "Samples drawn for this problem.",
        "n_pass": "Samples that passed.",
    },
    "stages": {
        "stage": "select-problems | sample | diagnose | verify | filter | train | evaluate.",
        "attempt_idx": "Retry level for sample / verify (0 = first tries); 0 for other stages.",
        "n_items": "Completions sampled, verdicts given, or examples trained on.",
        "verifier_calls": "Distinct (problem, completion) pairs checked.",
        "cpu_seconds": "This process's CPU seconds (sandbox and Lean REPL workers not included).",
        "shard": "Which shard of a sharded stage (scale.shards); NULL when unsharded.",
        "worker": "host:pid that ran it; ray:<node>:host:pid in a Ray worker.",
    },
    "nightly_arms": {"run_id": "The preset's experiment run in this nightly (<nightly_id>-<preset>)."},
    "arm_results": {
        "reference_arm": "The arm compared against: the config's first arm.",
        "vs_reference_pp": "This arm's final pass@1 minus the reference arm's, in pp (paired); NULL for it.",
        "vs_reference_ci_low_pp": "Low end of vs_reference_pp's 95 % interval.",
        "vs_reference_ci_high_pp": "High end of vs_reference_pp's 95 % interval.",
        "vs_reference_p_value": "Two-sided p-value of 'no difference from the reference arm'.",
    },
    "summary": {
        "status": "The run's status: running | completed | failed.",
        "smoke": "Run with --smoke (micro scale): a check that the preset runs, not its numbers.",
        "reference_arm": "The arm compared against: the config's first arm.",
        "vs_reference_pp": "This arm's final pass@1 minus the reference arm's, in pp (paired); NULL for it.",
        "vs_reference_ci_low_pp": "Low end of vs_reference_pp's 95 % interval.",
        "vs_reference_ci_high_pp": "High end of vs_reference_pp's 95 % interval.",
        "ci_low_pp": "Low end of delta_pp's 95 % interval; NULL until the run has reported.",
        "ci_high_pp": "High end of delta_pp's 95 % interval; NULL until the run has reported.",
        "p_value": "Two-sided p-value of 'no change'; NULL until the run has reported.",
    },
    "compute": {
        "seeds": "Seeds run.",
        "samples": "Completions sampled for training (first tries, retries, diagnoses).",
        "prompt_tokens": "Prompt tokens of those samples.",
        "tokens_sampled": "Completion tokens of those samples.",
        "sample_seconds": "Seconds spent sampling them.",
        "verifier_calls": "Distinct (problem, completion) pairs checked.",
        "verify_seconds": "Seconds spent verifying.",
        "verify_cpu_seconds": "CPU seconds of verification in this process (sandbox workers not included).",
        "eval_tokens_sampled": "Completion tokens sampled in evaluation.",
        "train_steps": "Optimizer steps, all rounds.",
        "train_examples": "Examples trained on, all rounds.",
        "train_seconds": "Seconds spent training.",
    },
    "nightly": {
        "prev_delta_pp": "The previous night's delta_pp (same experiment, config hash and arm).",
        "change_pp": "delta_pp - prev_delta_pp.",
        "change_ci_pp": "Half-width of the change's 95 % interval: sqrt(h² + h_prev²), h the nights' half-widths.",
        "verdict": "regression | improvement | within-ci | no-baseline.",
        "regression": "verdict = 'regression'.",
        "prev_nightly_id": "The previous night compared with.",
        "prev_run_id": "The previous night's run of the preset.",
        "prev_code_version": "The code the previous night ran.",
    },
}


def column_doc(table: str, column: str) -> str | None:
    """What `column` of `table` (or view) means; None when undocumented."""
    return TABLE_COLUMNS.get(table, {}).get(column) or COLUMNS.get(column)
