"""Build a tiny causal LM locally: a BPE tokenizer and a small Llama pretrained on arith.

Nothing is downloaded. The recipe (`TinyModelConfig`) fixes everything, and
the result is cached under `$PIDISTILL_HOME/models/tiny-<recipe hash>/` (or
`$PIDISTILL_MODEL_CACHE/tiny-<recipe hash>/` when that is set):

    >>> path = ensure_tiny_model(TinyModelConfig())     # minutes the first time, then instant
    >>> json.load(open(path / "pretrain.json"))["selection_pass_at_1"]
    0.25

Pretraining (a plain torch loop: full-sequence loss on prompt + reference
solution of arith *train* problems drawn with another generator seed; a fifth
of the prompts are retry prompts whose block says nothing about the answer,
so the model knows the try-again format as an instruction-tuned LLM would) stops at
the first check where greedy pass@1 on 200 selection problems reaches `stop_at`,
and fails unless it ends inside [target_low, target_high]: a base model that is
neither hopeless nor saturated leaves room to improve. The selection problems are
on the train side of arith's split, from a generator stream of their own and
never pretrained on: the model is not selected on the problems experiments
evaluate it on (its pass rate there is reported, as `base_pass_at_1`).

The build runs in a child process with torch's CPU numerics pinned
(`models.numerics`), so a recipe gives the same weights on any x86-64 machine
with the pinned torch; `pretrain.json` records their sha256.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from domains.arith import ArithDomain
from domains.base import Problem, file_sha256, stable_hash
from domains.pi import PI_TEMPLATES, PrivilegedInfo
from experiments.config import TinyModelConfig
from models.children import run_child
from models.numerics import PINNED, reproducible_cpu_env
from models.sampling.hf import HFSampler
from storage.home import home_dir
from storage.writer import folder_atomic

log = logging.getLogger(__name__)

RECIPE_VERSION = 4  # bump when the build procedure changes what it builds
PAD, EOS = "<pad>", "<eos>"
EVAL_PROBLEMS = 200  # same as the default domain.eval_size: the split experiments evaluate on
PRETRAIN_SEED_OFFSET = 10_007  # pretraining problems come from another generator stream
SELECTION_SEED_OFFSET = 20_011  # and the problems the build stops on from a third


class TinyModelError(RuntimeError):
    pass


def recipe_hash(recipe: TinyModelConfig) -> str:
    return stable_hash({"recipe": recipe.model_dump(), "version": RECIPE_VERSION}, n=12)


def model_cache_dir(home: Path | None = None) -> Path:
    """$PIDISTILL_MODEL_CACHE when set (tests share one build across homes), else $PIDISTILL_HOME/models."""
    env = os.environ.get("PIDISTILL_MODEL_CACHE")
    return Path(env).resolve() if env else (home or home_dir()) / "models"


def tiny_model_dir(recipe: TinyModelConfig, home: Path | None = None) -> Path:
    return model_cache_dir(home) / f"tiny-{recipe_hash(recipe)}"


def build_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE with every digit its own token (arithmetic needs digits, not merges of them)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, padding_side="left")


def build_model(recipe: TinyModelConfig, tokenizer: PreTrainedTokenizerFast) -> LlamaForCausalLM:
    torch.manual_seed(recipe.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.hidden_size * 4,
        num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads,
        num_key_value_heads=recipe.heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


RETRY_SHARE = 0.2  # of pretraining prompts carry a retry block, so the model knows the format


def _retry_pi(p, rng: random.Random) -> PrivilegedInfo:
    """A retry block that says nothing about the answer: the format of a try-again, not its content."""
    kind = rng.choice(["none", "previous_attempt", "verifier_feedback", "gibberish"])
    wrong = f"{int(p.answer) + rng.choice([-2, -1, 1, 2, 10])}"
    text = {
        "none": "",
        "previous_attempt": p.solution.rsplit("####", 1)[0] + f"#### {wrong}",
        "verifier_feedback": f"final answer {wrong} is wrong",
        "gibberish": "".join(rng.choice("abcdefghij klmnop") for _ in range(len(p.answer) + 2)),
    }[kind]
    return PrivilegedInfo(kind, text)


def _texts(domain: ArithDomain, n: int, seed: int = 0) -> tuple[list[str], list[str], set[str]]:
    """Prompt + reference solution of `n` train problems: (plain prompts, retry prompts, their questions)."""
    rng = random.Random(seed)
    problems = domain.load("train", limit=n)
    n_retry = int(RETRY_SHARE * n)
    plain = [domain.prompt(p) + p.solution for p in problems[n_retry:]]
    retry = [domain.prompt(p, _retry_pi(p, rng)) + p.solution for p in problems[:n_retry]]
    return plain, retry, {p.question for p in problems}


def selection_problems(recipe: TinyModelConfig, pretraining: set[str], n: int = EVAL_PROBLEMS) -> list[Problem]:
    """The problems the build stops on: arith problems of no experiment's evaluation (the train side of arith's
    hash split; the test side is what experiments evaluate on) from a generator stream of their own, none of
    them pretrained on. Stopping on the eval problems' pass rate would select the model on its test set."""
    domain = ArithDomain(seed=recipe.seed + SELECTION_SEED_OFFSET)
    drawn = domain.load("train", limit=n + len(pretraining) // 10 + 100)
    chosen = [p for p in drawn if p.question not in pretraining][:n]
    if len(chosen) < n:  # the pretraining pool is a sliver of the train side: this margin has always sufficed
        raise TinyModelError(f"only {len(chosen)} selection problems outside the pretraining pool, {n} wanted")
    return chosen


def greedy_pass_at_1(sampler: HFSampler, problems: list[Problem]) -> float:
    """Greedy pass@1 of the model behind `sampler` on arith `problems`."""
    domain = ArithDomain()
    outs = sampler.generate(
        [domain.prompt(p) for p in problems], n=1, temperature=0.0, max_new_tokens=48, stop=domain.stop
    )
    verdicts = domain.check_many(problems, [o[0].text for o in outs])
    return sum(v.passed for v in verdicts) / len(problems)


def partial_dir(final: Path) -> Path:
    """Where the build of `final` keeps its last checkpoint until it finishes: beside it, hidden."""
    return final.with_name(f".{final.name}.partial")


def _save_partial(partial: Path, state: dict) -> None:
    """The build's state at a check (weights, optimizer, schedule, data rng, history), written whole."""
    partial.mkdir(parents=True, exist_ok=True)
    tmp = partial / f"state.pt.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, partial / "state.pt")


def _progress(step: int, recipe: TinyModelConfig, loss: float, score: float, started: float, first: int) -> str:
    per_step = (time.time() - started) / max(1, step - first)
    left = (recipe.max_steps - step) * per_step / 60
    return (
        f"  tiny model: step {step:5d} of at most {recipe.max_steps}  loss {loss:.3f}  selection pass@1 {score:.3f} "
        f"(stops at {recipe.stop_at})  {per_step:.2f} s/step, at most {left:.0f} min left"
    )


def pretrain(
    recipe: TinyModelConfig, out_dir: Path, partial: Path | None = None, after_check: Callable[[], None] | None = None
) -> dict:
    """Build tokenizer + model and pretrain until base pass@1 reaches `stop_at`; save to `out_dir`.

    A build killed part-way resumes from its last check (every `eval_every` steps, kept in `partial`) and
    ends with the same weights as one that never stopped: the checkpoint holds the optimizer, the schedule
    and the data generator's state. Torch's thread count is left alone: builds with one and with two
    threads gave bitwise-identical weights, and on 2 idle cores two threads trained 1.8x faster (one is
    faster only where other work contends for the cores: set OMP_NUM_THREADS=1 there)."""
    partial = partial or partial_dir(out_dir)
    torch.manual_seed(recipe.seed)
    rng = random.Random(recipe.seed)
    data_domain = ArithDomain(seed=recipe.seed + PRETRAIN_SEED_OFFSET)
    plain, retry, pretrained_on = _texts(data_domain, 20_000, recipe.seed)
    selection = selection_problems(recipe, pretrained_on)
    corpus = plain[:4000] + retry[:1000] + [t.format(text="the answer is 12 and 7") for t in PI_TEMPLATES.values()] * 20
    tokenizer = build_tokenizer(corpus, recipe.vocab_size)
    model = build_model(recipe, tokenizer)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = 100
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    eos = tokenizer.eos_token
    history: list[dict] = []
    step, score, loss_value = 0, 0.0, float("nan")
    if (partial / "state.pt").is_file():
        state = torch.load(partial / "state.pt", weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        rng.setstate(state["rng"])
        step, score, history = state["step"], state["score"], state["history"]
        print(f"  tiny model: resuming at step {step} (from {partial})", flush=True)
    started, first = time.time(), step
    tokenizer.padding_side = "right"
    while step < recipe.max_steps and not (history and score >= recipe.stop_at):
        model.train()
        # A batch is all plain or all retry prompts: similar lengths, little padding.
        pool = retry if rng.random() < RETRY_SHARE else plain
        batch = [t + eos for t in rng.sample(pool, recipe.batch_size)]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = model(**enc, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_value = loss.item()
        if step % recipe.eval_every == 0:
            score = greedy_pass_at_1(HFSampler.from_model(model, tokenizer, batch_size=128), selection)
            tokenizer.padding_side = "right"
            history.append({"step": step, "loss": round(loss_value, 4), "pass_at_1": score})
            log.info("tiny model pretraining: step %d loss %.3f pass@1 %.3f", step, loss_value, score)
            print(_progress(step, recipe, loss_value, score, started, first), flush=True)
            state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict()}
            _save_partial(partial, {**state, "rng": rng.getstate(), "step": step, "score": score, "history": history})
            if after_check:
                after_check()
    if not recipe.target_low <= score <= recipe.target_high:
        raise TinyModelError(
            f"tiny model pretraining ended at pass@1 {score:.3f} after {step} steps, outside "
            f"[{recipe.target_low}, {recipe.target_high}]; adjust model.tiny (max_steps, lr, size)"
        )
    # Reported, never selected on: the pass rate on the experiments' evaluation problems (arith's test side).
    test = ArithDomain().load("test", limit=EVAL_PROBLEMS)
    base = greedy_pass_at_1(HFSampler.from_model(model, tokenizer, batch_size=128), test)
    tokenizer.padding_side = "left"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {
        "recipe": recipe.model_dump(),
        "recipe_hash": recipe_hash(recipe),
        "steps": step,
        "seconds": round(time.time() - started, 1),
        "selection_pass_at_1": score,
        "base_pass_at_1": base,
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "cpu_numerics": {k: os.environ.get(k) for k in PINNED},
        "weights_sha256": file_sha256(out_dir / "model.safetensors"),
    }
    (out_dir / "pretrain.json").write_text(json.dumps(info, indent=1))
    return info


def ensure_tiny_model(recipe: TinyModelConfig, home: Path | None = None) -> Path:
    """The cached tiny model folder for `recipe`, building it first if needed (atomically)."""
    final = tiny_model_dir(recipe, home)
    if (final / "pretrain.json").exists():
        return final
    print(f"Building the tiny model (recipe {recipe_hash(recipe)}) in {final} ...", flush=True)
    with folder_atomic(final, replace=False) as work:  # a concurrent builder that finished first wins
        _build_in_child(recipe, work, partial_dir(final))
    shutil.rmtree(partial_dir(final), ignore_errors=True)  # done: the checkpoint has served
    return final


def _build_in_child(recipe: TinyModelConfig, out_dir: Path, partial: Path) -> None:
    """`pretrain` in a child process whose torch starts with the pinned CPU numerics (`models.numerics`),
    whatever this process's torch was started with: the same weights on any x86-64 machine. Its progress
    lines are printed here as they come; it dies with this process (`models.children`)."""
    args = ["-m", "models.tiny", recipe.model_dump_json(), str(out_dir), str(partial)]
    code, tail = run_child(args, {**os.environ, **reproducible_cpu_env()}, lambda line: print(line, flush=True))
    if code != 0:
        raise TinyModelError(f"the tiny model's build exited with status {code}:\n{tail}")


if __name__ == "__main__":  # the build's child process (`_build_in_child`)
    from tasks.resume import fault_point  # crash tests: PIDISTILL_FAULT_KILL_AT=tiny-check#2

    recipe_json, out, part = sys.argv[1:]
    pretrain(TinyModelConfig.model_validate_json(recipe_json), Path(out), Path(part), lambda: fault_point("tiny-check"))
