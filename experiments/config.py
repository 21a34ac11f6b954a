"""The frozen config tree of an experiment, and loading it from YAML.

A preset (experiments/presets/demo.yaml), abridged:

    name: demo
    domain: {name: arith, train_size: 64, eval_size: 200}
    model: {name_or_path: tiny}
    sampling: {n: 4, temperature: 1.0}
    train: {method: sft, lr: 5.0e-4}
    rounds: 2
    seeds: [0, 1, 2]
    arms:
      - {name: no-train, set: {train.method: none}}
      - {name: rft}

Every field has a description (Prefect's UI form shows them). Configs do no
I/O: checking that a dataset exists is `flows.preflight`, not validation here.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from domains.errors import NotRetryable
from domains.pi import PIKind  # the kinds of privileged information (retry.feedback, train.opsd.pi)

PRESETS_DIR = Path(__file__).resolve().parent / "presets"

# Which attempts a per-problem pass rate counts (filter.frontier_pass_rate_from, curriculum.pass_rate_from).
PassRateFrom = Literal["first_tries", "all_attempts"]

_FLOAT = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(NotRetryable, ValueError):
    """A config that does not validate; the message names the offending field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DomainConfig(_Frozen):
    name: Literal["arith", "gsm8k", "mbpp", "humaneval", "minif2f"] = Field(
        "arith", description="Problem domain: arith (procedural), gsm8k, mbpp, humaneval or minif2f."
    )
    path: str | None = Field(
        None,
        description="Another file/folder of the domain's format, or an HF dataset name. Empty: the bundled data.",
    )
    train_size: int = Field(64, ge=1, description="Training problems sampled each round.")
    eval_size: int = Field(200, ge=1, description="Held-out (test split) problems evaluated each round.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword options of the domain (e.g. arith max_ops)."
    )
    decontaminate: bool = Field(
        True,
        description="Preflight refuses a run whose evaluation problems appear among its training problems, "
        "verbatim or nearly (domains/decontam.py). false: train on evaluation problems on purpose (test-time "
        "training: humaneval's train_on_test, one domain.path file read as both splits).",
    )


class TinyModelConfig(_Frozen):
    """Recipe of the locally built model used when model.name_or_path is 'tiny'."""

    vocab_size: int = Field(384, ge=64, description="Tokenizer vocabulary size (BPE, digits split).")
    hidden_size: int = Field(128, ge=32, description="Transformer width.")
    layers: int = Field(4, ge=1, description="Transformer layers.")
    heads: int = Field(4, ge=1, description="Attention heads (head dim = hidden/heads, keep >= 32 for vLLM).")
    max_steps: int = Field(4000, ge=10, description="Most pretraining steps before giving up.")
    batch_size: int = Field(64, ge=1, description="Pretraining batch size.")
    lr: float = Field(3e-3, gt=0, description="Pretraining peak learning rate.")
    target_low: float = Field(0.10, ge=0, le=1, description="Lowest acceptable base pass@1 on the eval split.")
    target_high: float = Field(0.60, ge=0, le=1, description="Highest acceptable base pass@1 on the eval split.")
    stop_at: float = Field(
        0.25, ge=0, le=1, description="Pretraining stops at the first check whose pass@1 reaches this."
    )
    eval_every: int = Field(100, ge=10, description="Steps between pass@1 checks during pretraining.")
    seed: int = Field(0, description="Seed of tokenizer corpus, init and data order.")

    @model_validator(mode="after")
    def _window(self) -> TinyModelConfig:
        if not self.target_low <= self.stop_at <= self.target_high:
            raise ValueError("need target_low <= stop_at <= target_high")
        if self.hidden_size % self.heads:
            raise ValueError("hidden_size must be a multiple of heads")
        return self


class ModelConfig(_Frozen):
    name_or_path: str = Field(
        "tiny",
        description="'tiny' (built locally on arith), 'smollm2-135m' (SmolLM2-135M-Instruct, bundled), an HF "
        "model id, or a local checkpoint folder.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights dtype: auto = bfloat16 on GPU, float32 on CPU."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where to run: auto = cuda when present.")
    chat: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Prompt through the tokenizer's chat template (on), as plain text (off, base models), or "
        "auto: chat when the tokenizer has a template. Retries are then conversations (see domains/pi.py).",
    )
    chat_template_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Variables for the chat template, the same for sampling, SFT and OPSD: e.g. "
        "{enable_thinking: false} for Qwen3.",
    )
    tiny: TinyModelConfig = Field(default_factory=TinyModelConfig, description="Recipe of the tiny model.")

    @field_validator("chat", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: Any) -> Any:
        """YAML reads a bare `on`/`off` as true/false: take them as meant."""
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v


class SamplingConfig(_Frozen):
    backend: Literal["hf", "vllm", "auto"] = Field(
        "hf", description="Sampler: hf (transformers generate), vllm, or auto (vLLM when importable on a GPU)."
    )
    n: int = Field(4, ge=1, description="Samples per training prompt (first tries).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 = greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(64, ge=1, description="Most tokens generated per completion.")
    batch_size: int = Field(64, ge=1, description="Sequences per generate() call (HF backend).")
    tensor_parallel_size: int | None = Field(
        None, ge=1, description="vLLM: GPUs one engine splits the model over (tensor parallel); empty: 1."
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0,
        le=1,
        description="vLLM: share of each GPU's memory the engine takes for weights and KV cache; empty: vLLM's 0.9.",
    )
    max_model_len: int | None = Field(
        None,
        ge=16,
        description="vLLM: longest prompt + completion the engine serves (less KV cache to reserve); empty: the model's.",
    )

    def engine_options(self) -> dict[str, Any]:
        """What goes to `vllm.LLM` beyond the model and dtype: the settings given (empty ones: vLLM's defaults)."""
        names = ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    temperature_schedule: list[float] | None = Field(
        None,
        description="Per-round temperatures (round r uses entry r-1, the last one repeats); empty = `temperature`.",
    )

    @field_validator("temperature_schedule")
    @classmethod
    def _schedule(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (not v or any(t < 0 for t in v)):
            raise ValueError("needs at least one temperature, none negative")
        return v


class RetryConfig(_Frozen):
    max_retries: int = Field(
        0, ge=0, description="K: follow-ups per failed first try, a chain of up to K or a fan of K (`shape`); 0: none."
    )
    strategy: Literal["retry", "resample"] = Field(
        "retry",
        description="retry: a failed attempt gets a retry prompt carrying `feedback`; resample: the double-sample "
        "control, a fresh sample of the original prompt (no failure signal; spent as `shape` and `budget` say).",
    )
    shape: Literal["chain", "fan"] = Field(
        "chain",
        description="chain: up to K levels, each follow-up answering the chain's previous failed attempt "
        "(attempt_idx 1..K); fan: K independent follow-ups of the failed first try at once (attempt_idx 1, "
        "sample_idx 0..K-1, parent the first try).",
    )
    budget: Literal["until_pass", "fixed"] = Field(
        "until_pass",
        description="until_pass: a chain stops at its first accepted follow-up, so arms whose follow-ups pass at "
        "different rates spend different budgets; fixed: every failed first try gets exactly K follow-ups in every "
        "arm and round (a chain whose follow-up passed goes on from its last failed attempt): the matched budget "
        "of a double-sample control. A fan always spends K.",
    )
    feedback: PIKind = Field("none", description="What the retry prompt carries (stored as pi_kind).")
    model: str | None = Field(
        None, description="Another model samples the retries (cross-model retry): 'tiny', an HF id or a path."
    )
    temperature: float | None = Field(None, ge=0, description="Temperature of retries; empty = the round's.")
    diagnosis_max_new_tokens: int = Field(
        64, ge=1, description="self_diagnosis: most tokens of the diagnosis the model writes before retrying."
    )


class CurriculumConfig(_Frozen):
    mode: Literal["static", "dynamic"] = Field(
        "static",
        description="static: the same training problems every round; dynamic: each round picks problems by their "
        "running pass rates in this run (read from DuckDB).",
    )
    pool_size: int = Field(1000, ge=1, description="dynamic: candidate training problems to choose from.")
    target_low: float = Field(0.0, ge=0, le=1, description="dynamic: prefer problems with pass rate above this.")
    target_high: float = Field(1.0, ge=0, le=1, description="dynamic: ...and below this.")
    explore: float = Field(
        0.25, ge=0, le=1, description="dynamic: share of each round's problems drawn from not-yet-tried ones."
    )
    pass_rate_from: PassRateFrom = Field(
        "first_tries",
        description="dynamic: which attempts a problem's pass rate counts. first_tries: the model's own pass "
        "rate (attempt_idx 0); all_attempts: follow-ups too (a retry sees PI, and only failures get one), as "
        "before this setting existed.",
    )


class VerifyConfig(_Frozen):
    mode: Literal["binary", "graded"] = Field(
        "binary", description="binary: accept when all checks pass; graded: accept when score >= threshold."
    )
    threshold: float = Field(1.0, ge=0, le=1, description="Graded mode: lowest accepted score.")
    max_error_rate: float = Field(
        0.05, ge=0, le=1, description="A round fails loudly when more verdicts than this are verifier errors."
    )
    extra_tests: int = Field(
        8,
        ge=0,
        description="Code domains: hidden tests per problem for training rewards (inputs mutated from the shown "
        "tests, expected outputs from the reference solution; MBPP's challenge tests too), so a lookup table of "
        "the shown asserts earns nothing. 0: only the dataset's tests.",
    )
    extra_tests_in_eval: bool = Field(
        False,
        description="Also judge the held-out evaluation with the hidden tests (off: evaluation uses the "
        "dataset's own tests, comparable with published pass@1).",
    )


class FilterConfig(_Frozen):
    dedupe: bool = Field(True, description="Drop exact duplicate completions of one problem.")
    max_per_problem: int | None = Field(None, ge=1, description="Most accepted completions per problem.")
    frontier: bool = Field(False, description="Keep only problems whose pass rate this round is in the bounds.")
    frontier_low: float = Field(0.0, ge=0, le=1, description="Frontier: pass rate must be > this.")
    frontier_high: float = Field(1.0, ge=0, le=1, description="Frontier: pass rate must be < this.")
    frontier_pass_rate_from: PassRateFrom = Field(
        "first_tries",
        description="Frontier: which attempts a problem's pass rate counts. first_tries: the model's own pass "
        "rate (attempt_idx 0), so a problem only retries solved is too hard; all_attempts: follow-ups too (a "
        "retry sees PI, and only failures get one), as before this setting existed.",
    )
    reject_pi_copies: bool = Field(
        True,
        description="Reject (reason copies_pi) an attempt that copies the privileged information of its prompt "
        "(attempts.copies_pi, domains/pi_copy.py): a reference program or solution reproduced verbatim, a final "
        "answer taken from a wrong-answer hint, or a given answer reached through a step that does not hold. "
        "false: train on them as on any accepted attempt, as before this setting existed.",
    )


class OPSDConfig(_Frozen):
    """On-policy self-distillation: the teacher is the same model shown privileged information."""

    pi: PIKind = Field(
        "reference_solution",
        description="What the teacher's prompt adds (the retry catalog's kinds; verifier_feedback = the verdict "
        "on the student's own rollout, as in SDPO).",
    )
    teacher: Literal["live", "frozen", "ema"] = Field(
        "live", description="live: the student's current weights; frozen: a copy of the starting weights; ema."
    )
    ema_decay: float = Field(0.99, gt=0, lt=1, description="ema teacher: weight of the old teacher per step.")
    divergence: Literal["reverse_kl", "forward_kl", "jsd"] = Field(
        "reverse_kl", description="Per-token divergence: KL(student||teacher), KL(teacher||student), or JSD(beta)."
    )
    beta: float = Field(0.5, gt=0, lt=1, description="jsd: mixture weight of the teacher.")
    topk: int | None = Field(
        None, ge=1, description="Divergence over the student's top-k tokens plus a tail bucket; empty = full vocab."
    )
    batch_size: int = Field(8, ge=1, description="Problems per OPSD step (one rollout each).")
    steps: int | None = Field(
        None, ge=1, description="Optimizer steps; empty = train.epochs over the round's problems."
    )
    rollout_temperature: float = Field(1.0, ge=0, description="Temperature of the student's on-policy rollouts.")
    max_new_tokens: int | None = Field(None, ge=1, description="Rollout length; empty = sampling.max_new_tokens.")


class TrainConfig(_Frozen):
    method: Literal["none", "sft", "opsd"] = Field(
        "sft", description="none (no training: a control arm), sft (TRL SFTTrainer), opsd."
    )
    peft: Literal["full", "lora"] = Field("full", description="Full fine-tuning or a LoRA adapter.")
    init: Literal["previous", "base"] = Field(
        "previous", description="Each round trains from the previous round's checkpoint, or from the base."
    )
    lr: float = Field(1e-5, gt=0, description="Learning rate.")
    epochs: float = Field(1.0, gt=0, description="Epochs over the round's accepted examples.")
    batch_size: int = Field(8, ge=1, description="Per-device train batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    processes: int = Field(
        1,
        ge=1,
        le=1024,
        description="Training processes, one per GPU (on a CPU: gloo): SFT and OPSD run as torchrun children of "
        "the train task, batch_size (OPSD: opsd.batch_size) split over them. 1: in the task's own process.",
    )
    strategy: Literal["ddp", "fsdp", "fsdp_grad_op"] = Field(
        "ddp",
        description="How train.processes > 1 share the model: ddp (each holds all of it), fsdp (parameters, "
        "gradients and optimizer state sharded: FSDP2 full shard, ZeRO-3; for a model whose training state does "
        "not fit one GPU), fsdp_grad_op (gradients and optimizer state sharded: ZeRO-2). SFT only; fsdp is full "
        "fine-tuning (peft: full).",
    )
    max_length: int | None = Field(
        None,
        ge=8,
        description="Longest prompt+completion in tokens; longer examples are cut. Empty: none is cut (an example "
        "is a prompt plus at most sampling.max_new_tokens, so training sees whole completions).",
    )
    lora_r: int = Field(16, ge=1, description="LoRA rank.")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    lora_target_modules: list[str] | str = Field(
        "all-linear", description="Modules LoRA adapts ('all-linear' or a list of names)."
    )
    min_examples: int = Field(1, ge=0, description="Skip training (keep the model) with fewer accepted examples.")
    sft_overrides: dict[str, Any] = Field(
        default_factory=dict, description="Any other trl.SFTConfig argument, passed through as-is."
    )
    opsd: OPSDConfig = Field(default_factory=OPSDConfig, description="train.method=opsd settings.")


class EvalConfig(_Frozen):
    n: int = Field(1, ge=1, description="Samples per held-out problem.")
    temperature: float = Field(0.0, ge=0, description="Evaluation temperature; 0 = greedy.")
    max_new_tokens: int | None = Field(None, ge=1, description="Defaults to sampling.max_new_tokens.")


_RAY_ADDRESS = re.compile(r"^(auto|(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5})$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ScaleConfig(_Frozen):
    """Where the sample and verify stages run: in this process, or as shards on a Ray cluster.

    Only `shards`, `threads_per_shard` and `torch_threads` can change results (they are in the config hash); the
    executor and the Ray settings say where shards run, not what they compute (left out of it)."""

    RESULT_FIELDS: ClassVar[tuple[str, ...]] = ("shards", "threads_per_shard", "torch_threads")

    executor: Literal["local", "ray"] = Field(
        "local",
        description="local: shards run one after another in this process; ray: each shard is a Prefect task run "
        "on the Ray cluster at `ray_address` (prefect-ray's RayTaskRunner).",
    )
    shards: int = Field(
        1,
        ge=1,
        le=4096,
        description="Split each sample and verify stage into this many shards (contiguous, by problem). 1 with "
        "executor=local: the unsharded stages. More shards draw other (equally valid) random numbers than one; "
        "the same shards give the same completions wherever they run.",
    )
    threads_per_shard: int = Field(
        1,
        ge=1,
        le=1024,
        description="torch CPU threads of a shard, pinned both locally and on Ray so both compute the same numbers; "
        "also the CPUs a shard reserves on Ray.",
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="torch CPU threads of the unsharded stages (sample, diagnose, train, evaluate); empty = "
        "torch's default, one per core. On a small CPU shared with other work set 1: two threads contending "
        "with other jobs sampled SmolLM2 about 9x slower than one.",
    )
    gpus_per_shard: float = Field(0.0, ge=0, description="executor=ray: GPUs a shard reserves (Ray num_gpus).")
    chains: int = Field(
        1,
        ge=1,
        le=1024,
        description="Arm x seed chains run at once after round 0, each in its own process (flows/chains.py); "
        "1: one after another in this process. The same attempts either way at the same torch_threads; set "
        "torch_threads to cores / chains on a CPU.",
    )
    gpus_per_chain: int = Field(
        0,
        ge=0,
        le=64,
        description="GPUs each concurrent chain sees (CUDA_VISIBLE_DEVICES), from the ones this process sees: "
        "chains x gpus_per_chain must fit. 0: not pinned (CPU).",
    )
    ray_address: str | None = Field(
        None,
        description="executor=ray: the cluster, '<head-ip>:6379' (from a cluster node) or 'ray://<head-ip>:10001' "
        "(Ray Client). Empty or 'auto': $RAY_ADDRESS, else the cluster `ray start` made on this machine, else a "
        "temporary single-machine Ray instance per round.",
    )
    forward_env: list[str] = Field(
        default_factory=list,
        description="executor=ray: more environment variables copied to every Ray worker (PIDISTILL_HOME, "
        "PIDISTILL_MODEL_CACHE, HF_* and PREFECT_API_URL always are).",
    )

    @field_validator("ray_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is not None and not _RAY_ADDRESS.match(v):
            raise ValueError("expected 'auto', '<host>:<port>' or 'ray://<host>:<port>'")
        return v

    @field_validator("forward_env")
    @classmethod
    def _env_names(cls, v: list[str]) -> list[str]:
        bad = [n for n in v if not _ENV_NAME.match(n)]
        if bad:
            raise ValueError(f"not environment variable names: {bad}")
        return v

    @model_validator(mode="after")
    def _ray_only(self) -> ScaleConfig:
        if self.executor == "local" and self.gpus_per_shard:
            raise ValueError("gpus_per_shard needs executor=ray (local shards use model.device)")
        return self


class TrackingConfig(_Frozen):
    """An experiment tracker that receives the run once its report is written (analysis/tracking.py).

    It says where a run's numbers are sent, not what they are: left out of the stored config and its hash,
    so a run resumes with tracking switched on or off."""

    mlflow: bool = Field(
        False,
        description="Send the run to MLflow after its report: held-out pass@1 per arm by round, training losses, "
        "the config and the report's files (needs pip install 'pidistill[mlflow]').",
    )
    mlflow_uri: str | None = Field(
        None,
        description="MLflow tracking URI: a server (http://host:5000) or a database (sqlite:///path/mlflow.db). "
        "Empty: $MLFLOW_TRACKING_URI, else sqlite:///$PIDISTILL_HOME/_mlflow/mlflow.db (its artifacts beside it).",
    )
    mlflow_experiment: str | None = Field(
        None, description="The MLflow experiment the run goes to; empty: the config's name."
    )


class ArmConfig(_Frozen):
    name: str = Field(description="Arm name (letters, digits, . _ -); stored in every row as `arm`.")
    set: dict[str, Any] = Field(
        default_factory=dict, description="Dotted overrides of the experiment config for this arm."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 64)")
        return v


class ExperimentConfig(_Frozen):
    name: str = Field("experiment", description="Experiment name (preset name).")
    description: str = Field("", description="What the experiment tests.")
    seed_result: str = Field("", description="What the original sprint measured, for comparison.")
    smoke: bool = Field(
        False,
        description="Set by --smoke (a label): the config was scaled down to micro scale (tiny model, few "
        "problems, one seed); its numbers are not the experiment's.",
    )
    domain: DomainConfig = Field(default_factory=DomainConfig, description="Problems and how many.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="The model being improved.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="How attempts are sampled.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="The try-again loop.")
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig, description="Which problems each round.")
    verify: VerifyConfig = Field(default_factory=VerifyConfig, description="How attempts are judged.")
    filter: FilterConfig = Field(default_factory=FilterConfig, description="Which attempts become SFT data.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="How the model is trained each round.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation after each round.")
    scale: ScaleConfig = Field(
        default_factory=ScaleConfig, description="Where sample and verify run: locally or as shards on Ray."
    )
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig, description="Where the run is sent once reported: MLflow (off by default)."
    )
    rounds: int = Field(1, ge=1, le=100, description="Sample-verify-filter-train-evaluate rounds.")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="Seeds; each arm runs each.")
    arms: list[ArmConfig] = Field(
        default_factory=lambda: [ArmConfig(name="main")], min_length=1, description="Arms compared."
    )

    @field_validator("domain", mode="before")
    @classmethod
    def _domain_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @field_validator("model", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        return {"name_or_path": v} if isinstance(v, str) else v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '.', '_' or '-' (at most 64)")
        return v

    @model_validator(mode="after")
    def _arms_resolve(self) -> ExperimentConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names must be unique, got {names}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be unique, got {self.seeds}")
        for arm in self.arms:
            if arm.set:
                self.for_arm(arm.name)  # raises ConfigError naming arms[i].set.<key>
        return self

    def for_arm(self, arm: str) -> ExperimentConfig:
        """The effective config of one arm: its overrides applied, `arms` narrowed to it
        (with an empty `set`: the overrides are in the fields now)."""
        index = next((i for i, a in enumerate(self.arms) if a.name == arm), None)
        if index is None:
            raise KeyError(f"no arm {arm!r}; arms: {[a.name for a in self.arms]}")
        spec = self.arms[index]
        data = self.model_dump()
        data["arms"] = [{"name": spec.name}]
        for key, value in spec.set.items():
            if key.split(".")[0] in ("arms", "seeds", "name", "tracking"):
                raise ConfigError(f"arms[{index}].set.{key}: an arm cannot override {key.split('.')[0]!r}")
            _set_dotted(data, key, value, where=f"arms[{index}].set")
        return _validate(data, prefix=f"arms[{index}].set: ")

    def arm_domains(self) -> list[str]:
        """The domains the arms run on, in arm order without repeats (one, unless an arm sets its own)."""
        return list(dict.fromkeys(self.for_arm(a.name).domain.name for a in self.arms))

    # What names or describes an experiment but cannot change a number it produces: editing the
    # description in the UI form must not move the hash (resume and the nightly compare by it).
    # `smoke` labels a config whose scaled-down fields already differ (and hash differently) from the preset's.
    NOT_HASHED: ClassVar[tuple[str, ...]] = ("description", "seed_result", "smoke")
    # Fields added after runs were stored: kept in the canonical JSON only when set away from their default,
    # so a config that leaves them alone keeps the hash (and resumes the runs) it had before they existed.
    # Where a default changed what a config computes, the field's description says what it was before.
    ADDED_LATER: ClassVar[tuple[str, ...]] = (
        "domain.decontaminate",
        "curriculum.pass_rate_from",
        "filter.frontier_pass_rate_from",
        "filter.reject_pi_copies",
        "retry.shape",
        "retry.budget",
    )

    def config_hash(self) -> str:
        """The identity of what the config computes: its canonical JSON without `NOT_HASHED`."""
        data = {k: v for k, v in json.loads(self.canonical_json()).items() if k not in self.NOT_HASHED}
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]

    def canonical_json(self) -> str:
        """The config as stored with a run (and hashed). Of `scale`, only what changes results is kept,
        and nothing at its defaults: a run resumes on another executor, and hashes predate the section.
        The `ADDED_LATER` fields are kept only away from their defaults, for the same reason.
        `tracking` (where the numbers are sent) is left out: a run resumes with a tracker switched on."""
        data = self.model_dump(mode="json")
        data.pop("tracking")
        scale = {k: v for k, v in data.pop("scale").items() if k in ScaleConfig.RESULT_FIELDS}
        if scale != {k: ScaleConfig.model_fields[k].default for k in ScaleConfig.RESULT_FIELDS}:
            data["scale"] = scale
        for dotted in self.ADDED_LATER:
            section, name = dotted.split(".")
            if data[section][name] == type(getattr(self, section)).model_fields[name].default:
                del data[section][name]
        return json.dumps(data, sort_keys=True, separators=(",", ":"))


# `--set model=X` / `--set domain=X` name the model / domain and keep the rest of the section.
_SHORTHAND = {"model": "name_or_path", "domain": "name"}


# --smoke: the same experiment at micro scale on CPU with the tiny model. GSM8K becomes arith (the
# tiny model only knows arith); code and Lean keep their domain (the sandbox / Lean path still runs).
SMOKE_OVERRIDES: dict[str, Any] = {
    "model.name_or_path": "tiny",
    "model.chat": "auto",  # the tiny model is plain text; a chat model named with --set gets its template
    "domain.train_size": 16,
    "domain.eval_size": 40,
    "domain.path": None,
    "sampling.n": 2,
    "sampling.max_new_tokens": 48,
    "sampling.batch_size": 64,
    "train.lr": 3.0e-4,  # the tiny model's; a model named with --set keeps the preset's (load_config)
    "train.batch_size": 8,
    "train.max_length": 256,
    "curriculum.pool_size": 64,
    "seeds": [0],
}
_SMOKE_DOMAIN = {"gsm8k": "arith"}
# Cross-model retry at micro scale: the retries must still come from another model than the one trained, or
# the arms of cross-model-retry would be the same run twice. SmolLM2-135M-Instruct ships with pidistill
# (models/bundled.py), needs no hub and speaks arith; a second tiny recipe would cost a pretraining build.
SMOKE_RETRY_MODEL = "smollm2-135m"
SMOKE_SCALE = "tiny model, 16 train / 40 eval problems, 2 samples each, seed 0"
_SMOKE_MARK = "[smoke scale: "
_SMOKE_ARM_DROPS = ("model.", "domain.", "sampling.n", "sampling.max_new_tokens")


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    """`config` at micro scale (see SMOKE_OVERRIDES); arms keep what they vary, except model and sizes. An arm
    on its own domain keeps it (mapped as the config's is); another retry model becomes SMOKE_RETRY_MODEL."""
    data = config.model_dump()
    for key, value in SMOKE_OVERRIDES.items():
        _set_dotted(data, key, value, where="smoke")
    data["domain"]["name"] = _SMOKE_DOMAIN.get(data["domain"]["name"], data["domain"]["name"])
    if data["retry"]["model"]:
        data["retry"]["model"] = SMOKE_RETRY_MODEL
    for arm in data["arms"]:
        domain = _arm_domain(arm["set"])
        arm["set"] = {
            k: (SMOKE_RETRY_MODEL if k == "retry.model" and v else v)
            for k, v in arm["set"].items()
            if not k.startswith(_SMOKE_ARM_DROPS) and k not in ("model", "domain")
        }
        if domain is not None:
            arm["set"]["domain.name"] = _SMOKE_DOMAIN.get(domain, domain)
    data["name"] = config.name
    data["smoke"] = True
    if not config.description.startswith(_SMOKE_MARK):  # the stored description says what ran, not the preset's
        data["description"] = f"{_SMOKE_MARK}{SMOKE_SCALE}] {config.description}".rstrip()
    return _validate(data, prefix="smoke: ")


def _arm_domain(overrides: dict[str, Any]) -> str | None:
    """The domain an arm's `set` names (`domain: X`, `domain: {...}` or `domain.name: X`), or None."""
    if "domain.name" in overrides:
        return overrides["domain.name"]
    value = overrides.get("domain")
    if isinstance(value, dict):
        return value.get("name", DomainConfig.model_fields["name"].default)
    return value


def _distinct_retry_model(data: dict[str, Any]) -> None:
    """--smoke, then `--set model=X`: a retry model that is now the trained model becomes the other small one
    (tiny or SMOKE_RETRY_MODEL), so that cross-model arms still retry with another model."""
    model = data.get("model")
    trained = model.get("name_or_path", "tiny") if isinstance(model, dict) else model
    other = "tiny" if trained == SMOKE_RETRY_MODEL else SMOKE_RETRY_MODEL
    retry = data.get("retry")
    if isinstance(retry, dict) and retry.get("model") == trained:
        retry["model"] = other
    for arm in data.get("arms") or []:
        if isinstance(arm, dict) and (arm.get("set") or {}).get("retry.model") == trained:
            arm["set"]["retry.model"] = other


def _set_dotted(data: dict[str, Any], key: str, value: Any, where: str = "--set") -> None:
    parts = key.split(".")
    if len(parts) == 1 and key in _SHORTHAND and isinstance(value, str):
        parts = [key, _SHORTHAND[key]]
    node = data
    for i, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        elif isinstance(node[part], str) and part in _SHORTHAND:
            node[part] = {_SHORTHAND[part]: node[part]}
        if not isinstance(node[part], dict):
            raise ConfigError(f"{where} {key}: {'.'.join(parts[: i + 1])} is not a section")
        node = node[part]
    node[parts[-1]] = value


def _format_error(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":  # a misspelt key: name the close ones
            msg = "unknown key" + _did_you_mean(str(err["loc"][-1]), _fields_at(tuple(err["loc"][:-1])))
        got = f" (got {err['input']!r})" if loc and not isinstance(err.get("input"), dict) else ""
        lines.append(f"{prefix}{loc}: {msg}{got}" if loc else f"{prefix}{msg}")
    return "; ".join(lines)


def _validate(data: dict[str, Any], prefix: str = "") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, prefix)) from None


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def resolve_preset(preset_or_path: str) -> Path:
    """A preset name (experiments/presets/NAME.yaml) or a path to a YAML file."""
    path = Path(preset_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return path
    candidate = PRESETS_DIR / f"{preset_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(
            f"unknown preset {preset_or_path!r}{_did_you_mean(preset_or_path, preset_names())}; "
            f"presets: {', '.join(preset_names())}"
        )
    return candidate


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=2, cutoff=0.6)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the config section at `loc` (list indices skipped), for suggesting a key."""
    model: Any = ExperimentConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return []
        hint = field.annotation
        args = [a for a in (get_args(hint) or (hint,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        if not args:
            return []
        model = args[0]
    return list(model.model_fields) if isinstance(model, type) and issubclass(model, BaseModel) else []


def parse_overrides(pairs: list[str]) -> list[tuple[str, Any]]:
    """['train.lr=1e-4', 'model=tiny'] -> [('train.lr', 0.0001), ('model', 'tiny')] (values parsed as YAML)."""
    out = []
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({exc})") from None
        if isinstance(value, str) and _FLOAT.match(value):  # YAML 1.1 reads 1e-4 as a string
            value = float(value)
        out.append((key.strip(), value))
    return out


def load_config(
    preset_or_path: str, overrides: list[str] | tuple[str, ...] = (), smoke_scale: bool = False
) -> ExperimentConfig:
    """Read a preset or YAML file, apply `key=value` overrides (after smoke scaling), validate. Raises ConfigError."""
    path = resolve_preset(preset_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:  # an empty file would silently run the default experiment
        raise ConfigError(f"{path}: the file is empty; a config names at least its experiment (name: ...)")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    preset_lr = None
    if smoke_scale:
        full = _validate(data)
        data, preset_lr = smoke(full).model_dump(), full.train.lr
    pairs = parse_overrides(list(overrides))
    for key, value in pairs:
        _set_dotted(data, key, value)
    if smoke_scale and not any(k.split(".")[0] == "arms" or k in ("retry", "retry.model") for k, _ in pairs):
        _distinct_retry_model(data)  # unless --set names the retry model (or the arms) itself
    # --smoke's learning rate is for the tiny model it picks: a model named with --set keeps the preset's
    # (3e-4 collapsed SmolLM2 to empty completions in one step), unless --set names a rate too.
    config = _validate(data)
    if preset_lr is not None and config.model.name_or_path != "tiny" and all(k != "train.lr" for k, _ in pairs):
        config = config.model_copy(update={"train": config.train.model_copy(update={"lr": preset_lr})})
    return config
