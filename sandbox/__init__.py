"""Run untrusted (model-written) Python programs fast, with hard limits and real isolation.

    >>> from sandbox import Sandbox, Limits
    >>> with Sandbox(Limits(timeout_s=2.0, memory_mb=512)) as sb:
    ...     r = sb.run("print(1)")
    ...     r.status, r.stdout, r.isolation
    ...     [x.status for x in sb.run_many(["import os; os.fork()", "x = bytearray(10**10)"])]
    ('ok', '1\\n', 'bwrap')
    ['ok', 'memory']

Design: `Sandbox` keeps a pool of workers (default one per CPU). A worker is a small Python
fork-server (`_server.py`, stdlib only) started once inside its own bubblewrap container,
with common stdlib modules imported, the compiler warmed up and optional trusted `prelude`
modules (e.g. a test harness) loaded; each program is run by a forked child of that warm
interpreter (about 1-2 ms of CPU instead of 10+ ms for a fresh bwrap + python). `run_many`
spreads programs over the workers in batches of up to 32, each streamed to its worker (a small
header per program, then the program itself, which only the program's own child reads) while
the results stream back one by one; `start()` boots the workers in the background. A program is Python source or a `Call` of a
prelude function with JSON arguments, which spares the child compiling a program and decoding
its data (the code domains run their test harness that way):

    >>> from sandbox import Call
    >>> with Sandbox(prelude={"greet": "def hello(name):\\n    print('hello', name)\\n"}) as sb:
    ...     sb.run(Call("greet.hello", {"name": "you"})).stdout
    'hello you\\n'

Where the time goes, per program (2 CPUs, Firecracker VM): the kernel's work for fork, exit
and the copy-on-write faults of the child (~300 pages touched) dominates; the Python work is
well under half. Measured on MBPP test programs: see benchmarks/sandbox_throughput.py.

What is protected against (bubblewrap mode, `isolation="bwrap"`):
  * Network: a private network namespace with only its own loopback: nothing on the host
    (127.0.0.1 is the container's own) or beyond is reachable; public addresses are unreachable.
  * Filesystem: the container sees only /usr, /etc and the interpreter's own install
    directory, all read-only; /root, /home, the repository, /var, ... do not exist in it.
    The only writable places are the worker's private tmpfs (size-capped, `Limits.tmp_mb`),
    in which each program gets a fresh directory that is wiped after it, and the worker's own
    /dev/shm (another tmpfs of `tmp_mb`), emptied after every program.
  * Identity: as root, bwrap runs without a user namespace and the server drops every
    program to a throw-away uid (>= 1.5e9, owned by nothing on the host) with no capabilities
    and no supplementary groups, so DAC protects host files and RLIMIT_NPROC really binds
    (it does not bind uid 0, and a user namespace would map the sandbox uid back to root).
    Without root, bwrap uses an unprivileged user namespace (uid 65534 inside); programs then
    share the fork-server's uid (`Sandbox.uid_separated` is False; see below) but still reach
    nothing outside their container.
    no_new_privs is set (setuid binaries cannot elevate); --new-session blocks TIOCSTI.
  * Other programs: each program is a child forked from a server that never holds any
    program's source, Call arguments or output in its memory (it reads only a trusted header
    per program; the child reads its own body from the host's pipe, and output goes from the
    child's pipes to memfds to the host inside the kernel), so a program's memory (ctypes,
    /proc/self/mem, gc) holds nothing of the programs before or after it in its batch. The
    child keeps fds 0 (/dev/null), 1, 2 (its output pipes) and 3 (its status pipe) only. No IPC
    object outlives its program: as root the server starts the next program in a fresh IPC
    namespace whenever one left SysV shared memory, semaphores or message queues (without root
    every program gets its own), and POSIX message queues cannot be created (RLIMIT_MSGQUEUE 0);
    its files and /dev/shm entries are removed before the next program starts.
  * Verdicts: nothing a program does is reported as a sandbox failure. The child signals `R`
    on its status pipe once set up, before the program's first byte runs (`ExecResult.program_ran`);
    only a failure before that is a `sandbox_error`. Bytes it writes to the status pipe after
    that are ignored (but `M`: a MemoryError). A program whose worker dies under it is rerun
    alone on a fresh worker; if that dies too, its status is "killed" where programs share the
    server's uid (it could have killed its server), and a sandbox error where they run under
    their own (it cannot signal it). Files it leaves that cannot be removed set `ExecResult.damage` (the worker is
    replaced; a verifier should fail such a program).
  * Environment: cleared; a program sees PATH, HOME, TMPDIR, LANG only (no host secrets).
  * Processes: private pid namespace (the program sees nothing of the host and cannot signal
    it); rlimits on address space, CPU time, file size, open files and processes; the wall-clock
    timeout SIGKILLs the program's process group; the server is a child subreaper, so any
    descendant (daemons that double-fork and setsid included) is killed before the result is
    returned: no process of a program outlives its ExecResult. Workers die with the host
    process (--die-with-parent / PR_SET_PDEATHSIG and EOF on their pipe).
  * Output: each stream is capped at `Limits.max_output_bytes`; a program writing more is
    killed (status "killed", `truncated=True`): printing 1 GB costs neither host memory nor disk.

What is NOT protected against:
  * Kernel exploits and side channels: there is no seccomp filter, so the whole syscall
    surface is reachable (programs may even create their own user namespaces).
  * CPU and memory pressure on the host up to the limits (no cgroups): a worker's programs
    can use one core and `memory_mb` each, and its tmpfs up to `tmp_mb`.
  * Programs in the same worker run one after another in the same container, as the same
    throw-away uid, in the same network namespace: per-uid kernel state a program creates and
    leaves (e.g. keys in the user keyring) is visible to the next one. Honest programs create
    none, so it cannot leak their results, but programs could use it to talk to each other.
  * Without root (`Sandbox.uid_separated` False) a program shares its fork-server's uid: it
    can kill the server (seen as its own "killed" result) and, were it to defeat the server's
    non-dumpable flag, read the server's memory or write its reply pipe and forge other
    programs' results. Do not trust verdicts from such a sandbox.
  * Reading world-readable files under /usr and /etc (no secrets should live there).
  * A program interfering with code running in its own process (a test harness it is embedded
    in): that is the verifier's concern. The code domains keep all judgement out of that
    process (domains/code/__init__.py), and refuse a sandbox without `uid_separated`.

Fallback without bubblewrap (`isolation="rlimits"` or "rlimits+netns"): the same fork-server
runs directly on the host with the same rlimits, the same timeout kill and subreaper cleanup,
a private network namespace where the kernel permits one, and (as root) the throw-away uid.
It does NOT hide the host filesystem (world-readable files are readable, world-writable
directories such as /tmp writable), has no pid namespace, and when not root cannot drop to a
separate uid (a program could then signal other processes of the same user, the host process
included). /dev/shm is the host's (not emptied between programs). As root, the
throw-away uid must be able to read the interpreter's install directory (a pyenv under /root
cannot be read): otherwise only the preloaded modules import, and the pool logs a warning.
Every mode needs a fresh IPC namespace per program (root, or unprivileged user namespaces
without root): where the kernel refuses one, workers do not start (a sandbox error) rather than
run programs without it. Install bubblewrap (`apt-get install bubblewrap`) for real isolation.
"""

from sandbox.core import DEFAULT_PRELOAD, Call, ExecResult, Limits, Program, Sandbox, SandboxError, bwrap_available

__all__ = ["DEFAULT_PRELOAD", "Call", "ExecResult", "Limits", "Program", "Sandbox", "SandboxError", "bwrap_available"]
