"""Write a mixed math / code / chat prompt set without any download.

The SmolLM2 example trains drafts on the target's own answers to these prompts. They are made
here, offline and deterministically, from templates with random numbers, word lists
(``prompt_pools.py``) and the Python standard library's docstrings and sources; a prompt whose text
equals a packaged evaluation prompt (gsm8k, math500, humaneval, mbpp, mt-bench) is dropped.

Two mixes, a third of the prompts per domain in each:

* ``wide`` (the default): per domain, the kinds of request its benchmarks hold: word problems and
  competition-style problems in LaTeX; docstring-to-function, one-line tasks and code reading;
  writing, role-play, reasoning, extraction, STEM / humanities explanations and advice.
* ``narrow``: the first version (10 word-problem templates, docstring tasks, 8 advice templates over
  23 topics), kept so the earlier results on docs/results-smollm2.md stay reproducible.

    python make_prompts.py --out prompts.jsonl --n 600 --seed 0 [--mix wide|narrow]
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sysconfig
from importlib import resources
from pathlib import Path

import prompt_pools as P

MATH_TEMPLATES = [
    "{a} has {x} {item}s. {b} gives {a} {y} more, and then {a} uses {z} of them. How many {item}s does {a} have now?",
    "A shop sells {item}s for ${x} each. {a} buys {y} of them and pays with a ${w} bill. How much change does {a} get?",
    "{a} reads {x} pages a day. How many days does {a} need to finish a book of {p} pages?",
    "A train travels at {x} km per hour for {y} hours and then at {z} km per hour for {v} hours. How far does it go in total?",
    "{a} saves ${x} every week. After {y} weeks {a} spends ${z} on a gift. How much money is left?",
    "The sum of two numbers is {s} and their difference is {d}. What are the two numbers?",
    "A rectangle is {x} cm long and {y} cm wide. What are its area and its perimeter?",
    "{a} baked {x} cookies and packed them into boxes of {y}. How many full boxes are there and how many cookies are left over?",
    "What is {x}% of {p}, and what is {p} increased by {x}%?",
    "If 3 workers build a wall in {y} days, how many days do {x} workers need, working at the same rate?",
]
NAMES = P.NAMES[:12]  # the narrow mix used the first 12 names, 8 items and 23 topics
ITEMS = P.ITEMS[:8]
MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."

CHAT_TEMPLATES = [
    "Give me three practical tips for {t}.",
    "Explain {t} to a ten-year-old in a short paragraph.",
    "Write a short, friendly email asking a colleague for help with {t}.",
    "What are the most common mistakes people make with {t}, and how can they avoid them?",
    "Write a haiku about {t}.",
    "Summarise the pros and cons of {t} in a small table.",
    "I have one hour to learn the basics of {t}. Make me a plan.",
    "Compare {t} and {u}: how are they similar and how are they different?",
]
TOPICS = P.TOPICS[:23]
CODE_TEMPLATES = [
    "Write a Python function `{name}({args})` that does the following:\n{doc}",
    "Implement `{name}({args})` in Python.\n\nSpecification: {doc}",
    "{doc}\n\nWrite this as a Python function named `{name}` with parameters ({args}).",
]


def math_prompt(rng: random.Random) -> str:
    a, b = rng.sample(NAMES, 2)
    x, y, z, v = (rng.randint(2, 60) for _ in range(4))
    s = rng.randint(20, 200)
    d = rng.randrange(s % 2, s, 2)
    text = rng.choice(MATH_TEMPLATES).format(
        a=a, b=b, x=x, y=y, z=min(z, x + y), v=v, w=rng.choice([50, 100, 200]), p=rng.randint(100, 900),
        item=rng.choice(ITEMS), s=s, d=d,
    )
    return text + MATH_SUFFIX


def chat_prompt(rng: random.Random) -> str:
    t, u = rng.sample(TOPICS, 2)
    return rng.choice(CHAT_TEMPLATES).format(t=t, u=u)


def stdlib_functions(limit_files: int = 400) -> list[tuple[str, str, str, str]]:
    """(name, args, first docstring paragraph, source) of documented public stdlib functions, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.glob("*.py"))[:limit_files]:
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if doc and 40 <= len(doc.split("\n\n")[0]) <= 400:
                    args = ", ".join(a.arg for a in node.args.args)
                    source = ast.get_source_segment(text, node) or ""
                    out.append((node.name, args, " ".join(doc.split("\n\n")[0].split()), source))
    return out


def code_prompt(rng: random.Random, functions: list[tuple[str, str, str, str]]) -> str:
    name, args, doc, _ = rng.choice(functions)
    return rng.choice(CODE_TEMPLATES).format(name=name, args=args, doc=doc)


# -- the wide mix ----------------------------------------------------------------------------------


def wide_math(rng: random.Random) -> str:
    a, b = rng.sample(P.NAMES, 2)
    x, y, z, v, k = (rng.randint(2, 60) for _ in range(5))
    r1, r2 = rng.randint(1, 12), rng.randint(1, 12)
    s = rng.randint(20, 200)
    fill = dict(
        a=a, b=b, x=x, y=y, z=min(z, x + y), v=v, k=k, w=rng.choice([50, 100, 200]), p=rng.randint(100, 900),
        item=rng.choice(P.ITEMS), s=s, d=rng.randint(2, 12), d2=rng.randrange(s % 2, s, 2), q=r1 * r2,
        e=rng.randint(5, 99), m=rng.randint(3, 13), n=rng.randint(4, 15), sq=rng.choice([8, 12, 18, 20, 27, 45, 48, 50, 72, 75, 98, 200]),
        g1=x * k, g2=y * k, c=2 * rng.randint(2, 20), word=rng.choice(P.WORDS), xy=x + y, xyy=x + 2 * y,
    )
    if rng.random() < 0.5:
        return rng.choice(P.WORD_PROBLEMS).format(**fill) + MATH_SUFFIX
    template = rng.choice(P.COMPETITION)
    base = rng.randint(2, 9)
    fill.update(s=r1 + r2, b=base, pw=base ** rng.randint(2, 5), k=min(fill["k"] % 10 + 1, fill["n"]))
    return template.format(**fill) + MATH_SUFFIX


def wide_code(rng: random.Random, functions: list[tuple[str, str, str, str]]) -> str:
    kind = rng.random()
    if kind < 0.4:
        return rng.choice(P.CODE_WRAPPERS).format(task=rng.choice(P.CODE_TASKS))
    if kind < 0.8:
        name, args, doc, _ = rng.choice(functions)
        return rng.choice(P.DOC_WRAPPERS).format(name=name, args=args, doc=doc)
    short = [f for f in functions if 3 <= f[3].count("\n") <= 16]
    return rng.choice(P.READ_WRAPPERS).format(src=rng.choice(short)[3])


def wide_chat(rng: random.Random) -> str:
    t, u = rng.sample(P.TOPICS, 2)
    c1, c2 = rng.sample(P.CONCEPTS, 2)
    a, b, c, d = rng.sample(P.NAMES, 4)
    cities = rng.sample(P.CITIES, 3)
    months = rng.sample(P.MONTHS, 3)
    fill = dict(
        t=t, u=u, c=c, c2=c2, r=rng.choice(P.ROLES), a=a, b=b, d=d, x=rng.randint(2, 28), y=rng.randint(2, 28),
        z=rng.randint(20, 400), k=rng.randint(2, 28), p=rng.randint(300, 2000), w=rng.randint(10, 200),
        yr=rng.randint(1990, 2024), item=rng.choice(P.ITEMS), c1=cities[0], c3=cities[2],
        m1=months[0], m2=months[1], m3=months[2],
    )
    kind = rng.choice(["writing", "roleplay", "explain", "advice", "reasoning", "extraction"])
    if kind == "explain":
        fill["c"] = c1
    template = rng.choice({
        "writing": P.WRITING, "roleplay": P.ROLEPLAY, "explain": P.EXPLAIN, "advice": P.ADVICE,
        "reasoning": P.REASONING, "extraction": P.EXTRACTION,
    }[kind])
    if kind == "extraction":
        fill["c2"] = cities[1]
    return template.format(**fill)


def benchmark_prompts() -> set[str]:
    """Every packaged evaluation prompt's turns, normalised (lower case, single spaces)."""
    root = resources.files("deepspec_core") / "assets" / "eval_prompts"
    seen = set()
    for item in root.iterdir():
        if item.name.endswith(".jsonl"):
            for line in item.read_text(encoding="utf-8").splitlines():
                seen.update(_norm(t) for t in json.loads(line)["turns"])
    return seen


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=600, help="prompts in all (split evenly over math, code, chat)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mix", choices=["wide", "narrow"], default="wide", help="the template pools (see the module doc)")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --out that holds other prompts")
    args = ap.parse_args()
    if args.n < 1:
        raise SystemExit(f"--n {args.n}: ask for at least one prompt")
    if args.out.is_dir():
        raise SystemExit(f"--out {args.out} is a directory: give the path of a file, e.g. work/data/prompts.jsonl")
    rng = random.Random(args.seed)
    functions = stdlib_functions()
    if args.mix == "wide":
        makers = [("math", wide_math), ("code", lambda r: wide_code(r, functions)), ("chat", wide_chat)]
    else:
        makers = [("math", math_prompt), ("code", lambda r: code_prompt(r, functions)), ("chat", chat_prompt)]
    seen, rows, dropped, in_a_row = benchmark_prompts(), [], 0, 0
    while len(rows) < args.n:
        domain, make = makers[len(rows) % 3]
        text = make(rng)
        if _norm(text) in seen:
            dropped, in_a_row = dropped + 1, in_a_row + 1
            if in_a_row > 5000:  # the pools are finite: thousands of repeats in a row mean they are spent
                raise SystemExit(f"--n {args.n}: the {args.mix} mix ran out of distinct {domain} prompts after "
                                 f"{len(rows)}; ask for fewer")
            continue
        in_a_row = 0
        seen.add(_norm(text))
        rows.append({"id": f"{domain}-{len(rows):05d}", "messages": [{"role": "user", "content": text}],
                     "meta": {"domain": domain}})
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if args.out.is_file() and args.out.read_text() != text and not args.overwrite:
        raise SystemExit(f"{args.out} holds other prompts: choose another --out, or pass --overwrite")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {len(rows)} prompts ({args.mix} mix) to {args.out}; {dropped} repeats or benchmark prompts skipped")


if __name__ == "__main__":
    main()
