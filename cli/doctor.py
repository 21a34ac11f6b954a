"""`pidistill doctor`: what this machine can run, one line per thing, each with what to do about it.

    [ok]   torch          2.13.0+cpu, no GPU: --smoke runs and small models only
    [ok]   home           /work/main/runs (default; set PIDISTILL_HOME to move it): 3 run(s), 82 GB free
    [--]   lean           not installed: optional, only the Lean presets need it (lean-retry, ...); ...

`ok` works; `--` is missing but optional (some presets need it); `FAIL` is broken and stops runs that
need it. Nothing here writes, and the only network call is the hub probe (a few seconds at most; skipped
when HF_HUB_OFFLINE is set).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "--", "FAIL"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str

    def line(self) -> str:
        return f"{'[' + self.status + ']':<6} {self.name:<14} {self.detail}"


def torch_check() -> Check:
    import torch

    if torch.cuda.is_available():
        gpus = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return Check("torch", "ok", f"{torch.__version__}, GPU: {gpus}")
    return Check("torch", "ok", f"{torch.__version__}, no GPU: --smoke runs and small models only")


def home_check() -> Check:
    from storage.home import home_dir

    home = home_dir()
    where = next(p for p in (home, *home.parents) if p.exists())  # the folder a first run would create it in
    if not where.is_dir() or not os.access(where, os.W_OK | os.X_OK):
        return Check("home", "FAIL", f"{home} cannot be written ({where} is not a writable folder); set PIDISTILL_HOME")
    runs = sum(1 for p in home.iterdir() if (p / "runs").is_dir()) if home.is_dir() else 0
    free = shutil.disk_usage(where).free / 1e9
    source = "$PIDISTILL_HOME" if os.environ.get("PIDISTILL_HOME") else "default; set PIDISTILL_HOME to move it"
    return Check("home", "ok", f"{home} ({source}): {runs} run(s), {free:.0f} GB free")


def data_check() -> Check:
    from domains import data_root

    root = data_root()
    source = "$PIDISTILL_DATA" if os.environ.get("PIDISTILL_DATA") else "../shared/data"
    if not root.is_dir():
        return Check("data", "FAIL", f"{root} ({source}) not found: gsm8k, mbpp, humaneval and minif2f need it")
    present = [d for d in ("gsm8k", "mbpp", "humaneval", "minif2f") if (root / d).is_dir()]
    missing = [d for d in ("gsm8k", "mbpp", "humaneval", "minif2f") if d not in present]
    status: Status = "ok" if not missing else "--"
    gap = f"; missing: {', '.join(missing)}" if missing else ""
    return Check("data", status, f"{root} ({source}): {', '.join(present) or 'no datasets'}{gap}")


def models_check() -> Check:
    from models.bundled import BUNDLED, BundledModelError, gguf_path
    from models.tiny import model_cache_dir

    cache = model_cache_dir()
    built = sorted(p.name for p in cache.iterdir() if (p / "config.json").is_file()) if cache.is_dir() else []
    what = ", ".join(built) if built else "none yet (the tiny model builds on first use: pidistill bootstrap-model)"
    missing = []
    for name in BUNDLED:
        try:
            gguf_path(name)
        except BundledModelError:
            missing.append(name)
    if missing:
        return Check("models", "--", f"{cache}: {what}; bundled {', '.join(missing)} not installed (make setup)")
    return Check("models", "ok", f"{cache}: {what}; bundled: {', '.join(BUNDLED)} (pidistill bootstrap-model NAME)")


def hub_check(timeout: float = 4.0) -> Check:
    import huggingface_hub as hub

    try:
        cached = sorted(r.repo_id for r in hub.scan_cache_dir().repos if r.repo_type == "model")
    except Exception:  # no cache folder yet (the scanner raises CacheNotFound)
        cached = []
    have = f"cached: {', '.join(cached)}" if cached else "nothing cached"
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return Check("hub", "--", f"offline (HF_HUB_OFFLINE): only cached models load; {have}")
    try:
        hub.model_info("gpt2", timeout=timeout)
    except Exception as exc:
        return Check("hub", "--", f"unreachable ({type(exc).__name__}): only cached models load; {have}")
    return Check("hub", "ok", f"reachable ({hub.constants.ENDPOINT}); {have}")


def sandbox_check() -> Check:
    from sandbox import Limits, Sandbox

    with Sandbox(Limits(timeout_s=5.0), workers=1) as sb:
        r = sb.run("print('ok')")
        separated = sb.uid_separated
    if r.status != "ok":
        return Check("sandbox", "FAIL", f"a trivial program gave {r.status}: code domains cannot be verified")
    if not separated:
        return Check(
            "sandbox",
            "FAIL",
            "not root: programs would share the sandbox server's uid (one could forge its batch's results), "
            "so the code domains refuse to verify; run as root (e.g. the docker image)",
        )
    if r.isolation != "bwrap":
        return Check("sandbox", "--", f"isolation={r.isolation}: install bubblewrap for the strongest isolation")
    return Check("sandbox", "ok", "isolation=bwrap (namespaces, no network, read-only filesystem)")


def lean_checks(live: bool, detail: bool) -> list[Check]:
    """One line when Lean is simply not installed (optional); the full checklist when it is (or asked for)."""
    from experiments.config import load_config, preset_names
    from lean_env.doctor import doctor as lean_doctor

    rows = lean_doctor(live=live)
    presets = [n for n in preset_names() if "minif2f" in load_config(n).arm_domains()]
    installed = any(ok for name, ok, _ in rows if name in ("lake", "lean", "project"))
    if not installed and not detail:
        return [
            Check(
                "lean",
                "--",
                f"not installed: optional, only the Lean presets need it ({', '.join(presets)}); "
                "pidistill doctor --lean for the checklist",
            )
        ]
    checks = [Check(f"lean:{name}", "ok" if ok else "FAIL", info) for name, ok, info in rows]
    ready = all(ok for _, ok, _ in rows)
    return checks + [Check("lean", "ok" if ready else "FAIL", f"Lean presets {'can' if ready else 'cannot'} run")]


def run_doctor(live: bool = False, lean: bool = False, print_line: Callable[[str], None] = print) -> int:
    """Print every check; exit status 1 when one FAILs, else 0."""
    print_line(f"{'':<6} {'python':<14} {sys.version.split()[0]} ({sys.executable})")
    checks: list[Check] = []
    for check in (torch_check, home_check, data_check, models_check, hub_check, sandbox_check):
        result = check()
        print_line(result.line())
        checks.append(result)
    for result in lean_checks(live, detail=lean or live):
        print_line(result.line())
        checks.append(result)
    return 1 if any(c.status == "FAIL" for c in checks) else 0
