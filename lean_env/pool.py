"""A pool of N Lean REPL processes for checking proofs in parallel.

    >>> pool = ReplPool(ReplConfig(project_dir=...), size=4)
    >>> outcomes = pool.check_many(proofs, header="import Mathlib\\n")   # same order as `proofs`
    >>> pool.close()

Each REPL is started lazily by the first proof it gets (so the N header
imports run in parallel) and keeps its header environment for later proofs.
A proof that times out or crashes its REPL yields a ``timeout``/``crash``
outcome; that REPL restarts (header re-imported) on its next proof. Failing
to start or import the header raises until one REPL has come up once (so a
broken installation fails fast); afterwards such a failure is reported as a
``crash`` outcome for the proof that hit it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from lean_env.repl import CheckOutcome, LeanRepl, ReplConfig, ReplStartError

__all__ = ["ReplPool"]


class ReplPool:
    def __init__(self, config: ReplConfig | None = None, size: int = 1) -> None:
        if size < 1:
            raise ValueError(f"pool size must be >= 1, got {size}")
        self.config = config or ReplConfig()
        self.repls = [LeanRepl(self.config, name=f"repl-{i}") for i in range(size)]
        self._idle: queue.Queue[LeanRepl] = queue.Queue()
        for repl in self.repls:
            self._idle.put(repl)
        self._ever_started = False
        self._flag_lock = threading.Lock()

    @property
    def size(self) -> int:
        return len(self.repls)

    def start(self, header: str = "") -> None:
        """Start every REPL now (in parallel) with `header` imported; raises on failure."""

        def boot(repl: LeanRepl) -> None:
            repl.start()
            repl.header_env(header)

        with ThreadPoolExecutor(max_workers=self.size) as ex:
            for fut in [ex.submit(boot, r) for r in self.repls]:
                fut.result()
        self._ever_started = True

    def check(self, code: str, header: str = "", timeout: float | None = None) -> CheckOutcome:
        """Check one proof on the next idle REPL."""
        repl = self._idle.get()
        try:
            try:
                outcome = repl.check(code, header=header, timeout=timeout)
            except ReplStartError as exc:
                if not self._ever_started:
                    raise
                return CheckOutcome("crash", None, f"Lean REPL could not restart: {exc}")
            with self._flag_lock:
                self._ever_started = True
            return outcome
        finally:
            self._idle.put(repl)

    def check_many(
        self, codes: Sequence[str], header: str | Sequence[str] = "", timeout: float | None = None
    ) -> list[CheckOutcome]:
        """Check proofs in parallel (one per REPL at a time); results in input order.
        `header` is one header for all, or one per proof."""
        headers = [header] * len(codes) if isinstance(header, str) else list(header)
        if len(headers) != len(codes):
            raise ValueError(f"{len(codes)} proofs but {len(headers)} headers")
        if not codes:
            return []
        if self.size == 1 or len(codes) == 1:
            return [self.check(c, h, timeout) for c, h in zip(codes, headers)]
        ex = ThreadPoolExecutor(max_workers=min(self.size, len(codes)), thread_name_prefix="lean-pool")
        try:
            futures = [ex.submit(self.check, c, h, timeout) for c, h in zip(codes, headers)]
            return [f.result() for f in futures]
        finally:
            ex.shutdown(wait=True, cancel_futures=True)

    def stats(self) -> dict[str, int]:
        """Summed counters over the pool's REPLs."""
        keys = ("starts", "header_imports", "commands", "timeouts", "crashes", "recycles")
        return {k: sum(getattr(r.stats, k) for r in self.repls) for k in keys}

    def close(self) -> None:
        for repl in self.repls:
            repl.close()

    def __enter__(self) -> ReplPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
