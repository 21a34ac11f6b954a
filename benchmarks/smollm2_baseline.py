"""Base pass@1 of the bundled SmolLM2-135M-Instruct, prompted through its chat template vs as plain text,
and how often its completions hold no answer pidistill can read (issue 16).

    python benchmarks/smollm2_baseline.py                # 50 problems per setting, greedy, ~10 min on 2 cores
    python benchmarks/smollm2_baseline.py --problems 20 --settings arith-easy

Each row: a domain setting x prompt style. Columns: pass@1 (greedy), the fraction with no answer in the
domain's format (`####`, `\\boxed{}`, "the answer is"), the fraction with no `####` (the only format
before this issue's extraction work), and how many wrong completions the old last-number-anywhere
fallback would have accepted by coincidence. The baseline of the ratio is the plain prompt in the same run.
"""

from __future__ import annotations

import argparse
import time

from domains import get_domain
from domains.numeric import extract_answer, normalize_number
from domains.pi import first_messages
from models.bundled import ensure_bundled_model
from models.loading import load_tokenizer
from models.prompts import PromptStyle, render
from models.sampling.hf import HFSampler

SETTINGS = {
    "arith": ("arith", {}),
    "arith-2ops-20": ("arith", {"max_ops": 2, "max_operand": 20}),
    "arith-easy": ("arith", {"max_ops": 1, "max_operand": 20}),
    "gsm8k": ("gsm8k", {}),
}


def measure(sampler: HFSampler, setting: str, chat: bool, n: int, max_new_tokens: int) -> dict:
    name, options = SETTINGS[setting]
    domain = get_domain(name, **options)
    problems = domain.load("test", limit=n)
    style = PromptStyle(chat)
    prompts = [render(sampler.tokenizer, style, domain.prompt(p), first_messages(domain, p)) for p in problems]
    started = time.time()
    outs = sampler.generate(
        prompts, n=1, temperature=0.0, max_new_tokens=max_new_tokens, stop=domain.chat_stop if chat else domain.stop
    )
    texts = [o[0].text for o in outs]
    verdicts = domain.check_many(problems, texts)
    coincidence = sum(
        not v.passed and extract_answer(t, last_number=True) == normalize_number(p.answer)
        for p, t, v in zip(problems, texts, verdicts)
    )
    return {
        "setting": setting,
        "prompt": "chat" if chat else "plain",
        "pass@1": sum(v.passed for v in verdicts) / n,
        "no_answer": sum(v.reason == "no_answer" for v in verdicts) / n,
        "no_####": sum("####" not in t for t in texts) / n,
        "last_number_would_pass": coincidence,
        "seconds": round(time.time() - started, 1),
        "example": texts[0][:80],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=50)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = ap.parse_args()
    folder = str(ensure_bundled_model("smollm2-135m"))
    sampler = HFSampler(folder, device="cpu", batch_size=args.problems)
    assert load_tokenizer(folder).chat_template
    print("setting          prompt  pass@1  no_answer  no_####  last-number-would-pass  seconds  first completion")
    for setting in args.settings:
        rows = [measure(sampler, setting, chat, args.problems, args.max_new_tokens) for chat in (False, True)]
        for r in rows:
            print(
                f"{r['setting']:<16} {r['prompt']:<6}  {r['pass@1']:.3f}   {r['no_answer']:.3f}      {r['no_####']:.3f}"
                f"    {r['last_number_would_pass']:>3}                     {r['seconds']:>6}   {r['example']!r}"
            )
        plain, chat = rows
        if plain["pass@1"]:
            print(f"{setting}: chat / plain pass@1 = {chat['pass@1'] / plain['pass@1']:.2f}")
        else:
            print(f"{setting}: chat pass@1 {chat['pass@1']:.3f}, plain 0 (no answer in the domain's format)")


if __name__ == "__main__":
    main()
