"""Is Lean usable here? Checks for `lake`, `lean`, the Lake project, Mathlib and
the REPL, for ``pidistill doctor``.

    >>> print(format_doctor(doctor()))
    [ok]   lake      /root/.elan/bin/lake (Lake version 5.0.0 ...)
    [FAIL] project   not configured: set $PIDISTILL_LEAN_PROJECT ...

The project directory comes from the `project_dir` argument, else
``$PIDISTILL_LEAN_PROJECT``; the REPL command from `repl_command`, else
``$PIDISTILL_LEAN_REPL``, else ``lake env repl``. With ``live=True`` a REPL is
started and asked to elaborate a one-line theorem (no Mathlib import), which
proves the whole chain works; without it no Lean code is run (only
``--version`` calls and ``lake env printenv PATH``).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lean_env.repl import (
    COMMAND_ENV_VAR,
    PROJECT_ENV_VAR,
    LeanNotFound,
    LeanRepl,
    ReplConfig,
    ReplError,
    run_quick,
)

__all__ = ["doctor", "format_doctor"]

Check = tuple[str, bool, str]


def _version(exe: str, cwd: Path | None = None) -> str:
    rc, out, err = run_quick([exe, "--version"], cwd=cwd, timeout=60)
    text = (out or err).strip().splitlines()
    return text[0] if rc == 0 and text else f"`{exe} --version` failed (exit {rc}): {(err or out).strip()[:200]}"


def _mathlib_dir(project: Path) -> Path | None:
    """Where Mathlib's sources live for `project` (a dependency, or the project itself)."""
    for candidate in (project / ".lake" / "packages" / "mathlib", project):
        if (candidate / "Mathlib.lean").is_file():
            return candidate
    return None


def _mathlib_built(mathlib: Path) -> bool:
    return any(
        (mathlib / p).is_file()
        for p in (".lake/build/lib/lean/Mathlib.olean", ".lake/build/lib/Mathlib.olean", "build/lib/Mathlib.olean")
    )


def _find_repl(project: Path | None, lake_path: str | None, exe: str) -> tuple[bool, str]:
    """Whether `exe` (the REPL binary named in the command) can be found, and where."""
    candidates: list[Path] = []
    if project is not None:
        candidates += [project / ".lake" / "build" / "bin" / exe]
        packages = project / ".lake" / "packages"
        if packages.is_dir():
            candidates += sorted(packages.glob(f"*/.lake/build/bin/{exe}"))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return True, str(c)
    if lake_path and project is not None:
        rc, out, _ = run_quick([lake_path, "env", "printenv", "PATH"], cwd=project, timeout=120)
        if rc == 0:
            found = shutil.which(exe, path=out.strip())
            if found:
                return True, f"{found} (on `lake env` PATH)"
    found = shutil.which(exe)
    if found:
        return True, found
    return False, f"`{exe}` not found in the project's .lake/ builds or on PATH (build leanprover-community/repl)"


def doctor(
    project_dir: str | Path | None = None, repl_command: str | list[str] | None = None, live: bool = False
) -> list[Check]:
    """(check, ok, detail) rows, in order: lake, lean, project, toolchain, mathlib, repl[, repl-live]."""
    rows: list[Check] = []
    lake = shutil.which("lake")
    rows.append(("lake", lake is not None, f"{lake} ({_version(lake)})" if lake else "not on PATH (install elan)"))
    lean = shutil.which("lean")
    rows.append(("lean", lean is not None, f"{lean} ({_version(lean)})" if lean else "not on PATH (install elan)"))

    project_src = "option" if project_dir is not None else f"${PROJECT_ENV_VAR}"
    raw = project_dir if project_dir is not None else os.environ.get(PROJECT_ENV_VAR)
    project = Path(raw).expanduser() if raw else None
    if project is None:
        rows.append(("project", False, f"not configured: set ${PROJECT_ENV_VAR} to a Lake project with Mathlib"))
    elif not project.is_dir():
        rows.append(("project", False, f"{project} (from {project_src}) does not exist"))
        project = None
    elif not any((project / f).is_file() for f in ("lakefile.lean", "lakefile.toml")):
        rows.append(("project", False, f"{project} has no lakefile.lean / lakefile.toml"))
    else:
        rows.append(("project", True, f"{project} (from {project_src})"))

    toolchain = project / "lean-toolchain" if project is not None else None
    if project is None:
        rows.append(("toolchain", False, "(no project)"))
    elif toolchain is not None and toolchain.is_file():
        rows.append(("toolchain", True, toolchain.read_text().strip()))
    else:
        rows.append(("toolchain", False, "no lean-toolchain file in the project"))

    mathlib = _mathlib_dir(project) if project is not None else None
    if project is None:
        rows.append(("mathlib", False, "(no project)"))
    elif mathlib is None:
        rows.append(("mathlib", False, "Mathlib not found (.lake/packages/mathlib); run `lake update` in the project"))
    elif not _mathlib_built(mathlib):
        rows.append(("mathlib", False, f"{mathlib} not built; run `lake exe cache get` then `lake build`"))
    else:
        rows.append(("mathlib", True, str(mathlib)))

    try:
        config = ReplConfig(
            command=tuple(repl_command) if isinstance(repl_command, list) else repl_command, project_dir=project
        )
    except ValueError as exc:
        rows.append(("repl", False, f"bad repl command: {exc}"))
        return rows
    cmd = list(config.argv)
    if config.uses_lake and cmd[1:2] == ["env"] and len(cmd) >= 3:
        ok, where = _find_repl(project, lake, cmd[2])
        source = f"${COMMAND_ENV_VAR}" if repl_command is None and os.environ.get(COMMAND_ENV_VAR) else "command"
        rows.append(("repl", ok, f"{where}  [{source}: {' '.join(cmd)}]"))
    elif config.uses_lake:
        rows.append(("repl", lake is not None, f"run as `{' '.join(cmd)}` (not checked without live=True)"))
    else:
        exe = shutil.which(cmd[0]) or (cmd[0] if Path(cmd[0]).is_file() else None)
        rows.append(("repl", exe is not None, f"{exe or cmd[0] + ' not found'}  [command: {' '.join(cmd)}]"))

    if live:
        rows.append(_live_check(config))
    return rows


def _live_check(config: ReplConfig) -> Check:
    t0 = time.monotonic()
    try:
        with LeanRepl(config) as repl:
            out = repl.check("theorem pidistill_doctor : 1 + 1 = 2 := by decide", timeout=120)
    except (LeanNotFound, ReplError) as exc:
        return ("repl-live", False, str(exc)[:500])
    took = time.monotonic() - t0
    if out.status != "ok":
        return ("repl-live", False, f"{out.status}: {out.detail[:500]}")
    resp = out.response
    errors = getattr(resp, "errors", ())
    if errors or getattr(resp, "message", None):
        return ("repl-live", False, f"REPL answered with errors: {resp}")
    return ("repl-live", True, f"checked a one-line theorem in {took:.1f}s")


def format_doctor(rows: list[Check]) -> str:
    width = max((len(name) for name, _, _ in rows), default=0)
    lines = [f"{'[ok]  ' if ok else '[FAIL]'} {name:<{width}}  {detail}" for name, ok, detail in rows]
    if not all(ok for _, ok, _ in rows):
        lines.append(
            "Lean checks need elan (lake, lean), a Lake project requiring Mathlib and leanprover-community/repl, "
            f"built, with ${PROJECT_ENV_VAR} pointing at it."
        )
    return "\n".join(lines)
