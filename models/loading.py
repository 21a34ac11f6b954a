"""Loading a model and tokenizer from an HF id or a local folder, on the right device.

    >>> tok, model = load_tokenizer("Qwen/Qwen2.5-0.5B"), load_model("Qwen/Qwen2.5-0.5B", device="cuda")

Tokenizers without a pad token get eos as pad (generation pads on the left).
A PEFT adapter folder (one with `adapter_config.json`) loads its base model
(`base_model_name_or_path`) with the adapter merged in: a plain model, as a
merged checkpoint would be.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with `n` torch CPU threads, then restore the count. The thread count can change floating-point
    reductions, so a shard (and the tiny model's build) pins it to give the same numbers on every machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("model.device is 'cuda' but torch sees no GPU")
    return device


def autocast(dtype: str, device: str):
    """Mixed precision for training: fp32 master weights, forward and backward in `dtype` where the device
    supports it (CUDA). A model trained in bf16 weights directly loses small updates to rounding: at lr 1e-6
    an Adam step changed 1.9 % of bf16 weights vs 99.99 % of fp32 ones."""
    compute = resolve_dtype(dtype, device)
    if device == "cuda" and compute in (torch.bfloat16, torch.float16):
        return torch.autocast("cuda", dtype=compute)
    return contextlib.nullcontext()


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


def adapter_base(model_ref: str) -> str | None:
    """The base model of a PEFT adapter folder (one with adapter_config.json); None for anything else."""
    config = Path(model_ref).expanduser() / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text())["base_model_name_or_path"]


def load_tokenizer(model_ref: str) -> PreTrainedTokenizerBase:
    quiet_libraries()
    base = adapter_base(model_ref)
    if base is not None and not (Path(model_ref).expanduser() / "tokenizer_config.json").is_file():
        model_ref = base  # an adapter saved without its tokenizer uses the base model's
    tok = AutoTokenizer.from_pretrained(model_ref)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(model_ref: str, device: str = "auto", dtype: str = "auto") -> PreTrainedModel:
    quiet_libraries()
    device = resolve_device(device)
    base = adapter_base(model_ref)
    model = AutoModelForCausalLM.from_pretrained(base or model_ref, dtype=resolve_dtype(dtype, device))
    if base is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, model_ref).merge_and_unload()
    return model.to(device)  # type: ignore[arg-type]  # transformers' `to` wrapper is typed for dtypes only


def quiet_libraries() -> None:
    """No per-call progress bars or info chatter from transformers/datasets: stage logs say what happened."""
    import warnings

    import datasets
    import transformers

    # TRL's SFTConfig sets this deprecated field itself, once per trainer: not something a user can act on.
    warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
