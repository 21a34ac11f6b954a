#!/usr/bin/env python3
"""A test double for the Lean REPL (leanprover-community/repl): a small process
that speaks the REPL's stdin/stdout framing and answers from transcripts that
real Lean recorded (``../shared/data/lean_repl_transcripts``).

It exists because no Lean binary can be installed where the tests run; it lets
`lean_env.repl` / `lean_env.pool` be exercised as real subprocesses (pipes,
framing, timeouts, crashes, memory limits, restarts) without Lean. It does not
import `lean_env`, so it cannot share that package's mistakes.

Framing, as in REPL/Main.lean: a request is the run of stdin lines up to a
blank line, each line right-trimmed and concatenated; a block starting with
``#`` or ``--`` is a comment; end of input exits with status 0. Each answer is
a JSON object followed by one blank line.

Modes:
  --replay DIR [--names a,b,...]   strict replay: the i-th request must equal (as
                                   JSON) the i-th recorded request of the named
                                   transcripts (all, sorted, if no names) and is
                                   answered with the recorded response bytes.
  --lookup DIR [--names ...]       answer a {"cmd": ...} by looking its text (and
                                   options) up among the recorded commands; the
                                   env / proofState numbers in the answer are
                                   renumbered from this process's own counters,
                                   as a real REPL numbers them. A header (only
                                   import/open/set_option lines, no env) answers
                                   {"env": n}. A request naming an env this
                                   process never issued gets the REPL's
                                   {"message": "Unknown environment."}.
Knobs:
  --hang-on TEXT     never answer a command whose cmd contains TEXT
  --crash-on TEXT    on such a command, print a panic to stderr and exit 1
  --leak-mb N        keep N MiB more memory after every command run on an env
                     (as each REPL command keeps its environment), touching it;
                     on MemoryError (e.g. RLIMIT_AS) panic like Lean and exit 1
  --delay S          sleep S seconds before every answer (header excepted)
  --header-delay S   sleep S seconds before answering a header import
  --log FILE         append every request (one JSON line, pid first) to FILE
  --banner TEXT      print TEXT on stdout (no JSON) before reading anything
  --fail-start MSG   print MSG to stderr and exit 1 at once
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path


def read_blocks(text: str) -> list[str]:
    blocks, cur = [], []
    for line in text.split("\n"):
        if not line.strip(" \t\r\n"):
            if cur:
                blocks.append("".join(cur))
                cur = []
            continue
        cur.append(line.rstrip(" \t\r\n"))
    if cur:
        blocks.append("".join(cur))
    return [b for b in blocks if not (b.startswith("#") or b.startswith("--"))]


def split_out(text: str) -> list[str]:
    return [b for b in text.split("\n\n") if b.strip()]


def transcripts(root: Path, names: list[str] | None) -> list[tuple[str, list[str], list[str]]]:
    if names is None:
        files = sorted(root.glob("*.in")) + sorted((root / "Mathlib").glob("*.in"))
        names = [str(f.relative_to(root))[:-3] for f in files]
    out = []
    for name in names:
        reqs = read_blocks((root / f"{name}.in").read_text(encoding="utf-8"))
        resps = split_out((root / f"{name}.expected.out").read_text(encoding="utf-8"))
        out.append((name, reqs, resps))
    return out


def next_request(stdin) -> str | None:
    cur: list[str] = []
    while True:
        raw = stdin.readline()
        if not raw:
            return "".join(cur) if cur else None
        line = raw.decode("utf-8")
        if not line.strip(" \t\r\n"):
            if cur:
                return "".join(cur)
            continue
        cur.append(line.rstrip(" \t\r\n"))


def panic(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    os._exit(1)


HEADER_LINE = re.compile(r"^\s*(import|open|set_option)\b")


def is_header(req: dict) -> bool:
    cmd = req.get("cmd")
    if not isinstance(cmd, str) or "env" in req:
        return False
    lines = [ln for ln in cmd.split("\n") if ln.strip()]
    return bool(lines) and all(HEADER_LINE.match(ln) for ln in lines)


def lookup_key(req: dict) -> str:
    return json.dumps(
        [req.get("cmd"), req.get("allTactics"), req.get("rootGoals"), req.get("infotree")], ensure_ascii=False
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replay")
    ap.add_argument("--lookup")
    ap.add_argument("--names")
    ap.add_argument("--hang-on", action="append", default=[])
    ap.add_argument("--crash-on", action="append", default=[])
    ap.add_argument("--leak-mb", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--header-delay", type=float, default=0.0)
    ap.add_argument("--log")
    ap.add_argument("--banner")
    ap.add_argument("--fail-start")
    args = ap.parse_args()
    if args.fail_start:
        panic(args.fail_start)
    names = args.names.split(",") if args.names else None
    out = sys.stdout
    if args.banner:
        out.write(args.banner + "\n")
        out.flush()

    script: list[tuple[str, str, str]] = []  # (transcript, request text, response text)
    table: dict[str, str] = {}
    if args.replay:
        for name, reqs, resps in transcripts(Path(args.replay), names):
            if len(reqs) != len(resps):
                panic(f"double: {name}: {len(reqs)} requests but {len(resps)} responses")
            script.extend((name, q, r) for q, r in zip(reqs, resps))
    elif args.lookup:
        for _name, reqs, resps in transcripts(Path(args.lookup), names):
            for q, r in zip(reqs, resps):
                req = json.loads(q)
                if "cmd" in req:
                    table.setdefault(lookup_key(req), r)
    else:
        panic("double: give --replay DIR or --lookup DIR")

    hog: list[bytearray] = []
    envs = 0
    states = 0
    step = 0
    while True:
        text = next_request(sys.stdin.buffer)
        if text is None:
            return
        try:
            req = json.loads(text)
        except json.JSONDecodeError as exc:  # the REPL throws an uncaught exception here
            panic(f'uncaught exception: {{"message": "Could not parse JSON:\\n{exc}"}}')
        if args.log:
            with open(args.log, "a", encoding="utf-8") as f:
                f.write(json.dumps([os.getpid(), req], ensure_ascii=False) + "\n")
        cmd = req.get("cmd", "") if isinstance(req.get("cmd"), str) else ""
        if any(t in cmd for t in args.crash_on):
            panic("INTERNAL PANIC: out of memory (double: --crash-on)")
        if any(t in cmd for t in args.hang_on):
            while True:
                time.sleep(3600)
        if args.leak_mb and "env" in req:
            try:
                hog.append(bytearray(b"\x01") * (args.leak_mb << 20))
            except MemoryError:
                panic("INTERNAL PANIC: out of memory")

        if script:
            if step >= len(script):
                panic(f"double: request beyond the end of the replay: {text[:200]}")
            name, want, answer = script[step]
            step += 1
            if json.loads(want) != req:
                panic(f"double: {name}: request mismatch\n  want: {want}\n  got:  {text}")
            if args.delay:
                time.sleep(args.delay)
            out.write(answer + "\n\n")
            out.flush()
            continue

        if "env" in req and not (isinstance(req["env"], int) and 0 <= req["env"] < envs):
            answer_obj: dict = {"message": "Unknown environment."}
        elif is_header(req):
            if args.header_delay:
                time.sleep(args.header_delay)
            answer_obj = {"env": envs}
            envs += 1
        else:
            recorded = table.get(lookup_key(req))
            if recorded is None:
                panic(f"double: no recording for request {text[:300]}")
            answer_obj = json.loads(recorded)
            if "env" in answer_obj:
                answer_obj["env"] = envs
                envs += 1
            for key in ("sorries", "tactics"):
                for item in answer_obj.get(key, []):
                    if "proofState" in item:
                        item["proofState"] = states
                        states += 1
            if args.delay:
                time.sleep(args.delay)
        out.write(json.dumps(answer_obj, ensure_ascii=False, indent=1) + "\n\n")
        out.flush()


if __name__ == "__main__":
    main()
