"""The same floats on any x86-64 CPU: torch's CPU kernels and MKL pinned to one instruction set.

    >>> reproducible_cpu_env()
    {'ATEN_CPU_CAPABILITY': 'avx2', 'MKL_CBWR': 'AVX2'}

Torch picks its vectorized kernels (elementwise ops, softmax, the optimizer's updates) by the CPU's
widest instruction set, and MKL its matrix products likewise, so one recipe and seed trained to other
weights on an AVX-512 machine than on an AVX2 one (measured: a 60-step tiny-model build gave two
different digests on this machine with AVX-512 and with AVX2 forced). Pinned to AVX2, which every
x86-64 server of the last decade has, the kernels and MKL's code path (its conditional numerical
reproducibility, MKL_CBWR) are the same everywhere: identical weights and samples from the pinned
torch on any such machine, at the same speed here (0.31 s a step either way; the instruction-set-free
`default` was 2.1x slower). The thread count does not change the floats (1 and 2 threads gave one digest).

Both variables are read once, when torch loads its kernels: they must be in the environment before a
process imports torch. `cli.env.offline_defaults` sets them (as defaults: a value the user set wins) for
the `pidistill` command and the test suite; the tiny model is always built in a child process that has them.
A CPU without AVX2 gets nothing pinned (its kernels would be an illegal instruction) and other floats.
"""

from __future__ import annotations

import functools

PINNED = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


@functools.cache
def has_avx2() -> bool:
    """Whether this CPU has AVX2 (Linux: /proc/cpuinfo; elsewhere assumed not)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def reproducible_cpu_env() -> dict[str, str]:
    """The variables that pin torch's CPU numerics here (empty on a CPU without AVX2)."""
    return dict(PINNED) if has_avx2() else {}
