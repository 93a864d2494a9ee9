"""Write a mixed math / code / chat prompt set without any download.

The SmolLM2 example trains drafts on the target's own answers to these prompts. They are made
here, offline and deterministically, so they are disjoint from the evaluation benchmarks
(gsm8k, math500, humaneval, mbpp, mt-bench): math word problems from templates with random
numbers, code tasks from the Python standard library's docstrings, and chat requests from
templates over a list of everyday topics.

    python make_prompts.py --out prompts.jsonl --n 600 --seed 0
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import sysconfig
from pathlib import Path

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
NAMES = ["Ana", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jade", "Kofi", "Lena"]
ITEMS = ["apple", "marble", "stamp", "pencil", "ticket", "card", "sticker", "book"]
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
TOPICS = [
    "growing tomatoes", "public speaking", "saving money", "learning a language", "running a marathon",
    "cooking rice", "remote work", "time management", "writing a CV", "photography", "chess openings",
    "sleep hygiene", "composting", "job interviews", "budget travel", "baking bread", "version control",
    "meditation", "bird watching", "first aid", "negotiating a salary", "home workouts", "note taking",
]
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


def stdlib_functions(limit_files: int = 400) -> list[tuple[str, str, str]]:
    """(name, args, first docstring paragraph) of documented public stdlib functions, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.glob("*.py"))[:limit_files]:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and not node.name.startswith("_"):
                doc = ast.get_docstring(node)
                if doc and 40 <= len(doc.split("\n\n")[0]) <= 400:
                    args = ", ".join(a.arg for a in node.args.args)
                    out.append((node.name, args, " ".join(doc.split("\n\n")[0].split())))
    return out


def code_prompt(rng: random.Random, functions: list[tuple[str, str, str]]) -> str:
    name, args, doc = rng.choice(functions)
    return rng.choice(CODE_TEMPLATES).format(name=name, args=args, doc=doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=600, help="prompts in all (split evenly over math, code, chat)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    functions = stdlib_functions()
    makers = [("math", math_prompt), ("code", lambda r: code_prompt(r, functions)), ("chat", chat_prompt)]
    seen, rows = set(), []
    while len(rows) < args.n:
        domain, make = makers[len(rows) % 3]
        text = make(rng)
        if text in seen:
            continue
        seen.add(text)
        rows.append({"id": f"{domain}-{len(rows):05d}", "messages": [{"role": "user", "content": text}],
                     "meta": {"domain": domain}})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"wrote {len(rows)} prompts to {args.out}")


if __name__ == "__main__":
    main()
