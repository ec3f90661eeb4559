"""Code domain: standard-library functions, methods and classes, asked for by name and docstring.

    user:      Write a Python function `dedent(text)` that removes any common leading whitespace ...
    assistant: ```python
               def dedent(text):
                   ...
               ```

Only short definitions (at most `MAX_LINES` lines and `MAX_CHARS` characters) that parse on their own
are kept, so a small model can learn to produce complete, parseable code.
"""

from __future__ import annotations

import ast
import random

from sparkserve.demo.corpus_types import Example
from sparkserve.demo.stdlib_source import Definition, first_sentence, iter_definitions

MAX_LINES = 40
MAX_CHARS = 1400
MIN_SUMMARY_WORDS = 3

# Imperative verbs that open docstrings ("Return ..."), conjugated after "that" ("that returns ...").
VERBS = frozenset("""
accept acquire add adjust append apply ask assert attach build calculate call cancel check clean clear
close collect combine compare compile compute configure construct convert copy count create decode
decorate define delete derive describe detach determine display do dump emit enable encode end ensure
escape evaluate execute exit expand extend extract fetch fill filter find finish flush format generate
get give handle hash ignore implement indicate initialize insert install interpret invoke iterate join
keep list load locate look lookup make map mark match merge move normalize notify open parse pass perform
pop prepare print process produce push put quote raise read receive record reduce register release
reload remove rename render replace report reset resolve restore retrieve return reverse run save scan
search select send serialize set setup show shut skip sort split start stop store strip substitute
switch take tell terminate test translate truncate try turn unpack unquote unregister update use
validate verify wait walk wrap write yield
""".split())


def conjugate(verb: str) -> str:
    """Third person singular of an imperative verb: return -> returns, try -> tries, push -> pushes."""
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if verb.endswith("y") and verb[-2:-1] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def describe(summary: str) -> str | None:
    """Turn a docstring summary into a clause after "that", or None if it doesn't read as one."""
    words = summary.split()
    if len(words) < MIN_SUMMARY_WORDS:
        return None
    head = words[0].lower()
    if head not in VERBS or not words[0][:1].isupper():
        return None
    return " ".join([conjugate(head)] + words[1:])


def make_prompt(d: Definition, rng: random.Random) -> str | None:
    summary = first_sentence(d.docstring)
    if not summary:
        return None
    clause = describe(summary)
    noun = {"function": "function", "method": "method", "class": "class"}[d.kind]
    name = f"{d.qualname.split('.')[0]}.{d.signature}" if d.kind == "method" else d.signature
    if clause is not None and d.kind != "class":
        return f"Write a Python {noun} `{name}` that {clause}."
    if len(summary.split()) < MIN_SUMMARY_WORDS:
        return None
    opener = rng.choice(("Write a Python {noun} `{name}`. Its docstring says: {summary}.",
                         "Implement the Python {noun} `{name}`: {summary}."))
    return opener.format(noun=noun, name=name, summary=summary)


def usable(d: Definition) -> bool:
    """Short, parseable, and with a body beyond the docstring (no abstract stubs)."""
    if d.num_lines > MAX_LINES or len(d.source) > MAX_CHARS or "\t" in d.source:
        return False
    try:
        tree = ast.parse(d.source)
    except SyntaxError:
        return False
    body = tree.body[0].body[1:]  # after the docstring
    trivial = all(isinstance(s, ast.Pass) or (isinstance(s, ast.Raise) and "NotImplemented" in ast.unparse(s))
                  or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)) for s in body)
    return not trivial


def generate_code(max_examples: int | None, seed: int) -> list[Example]:
    """Code examples from the stdlib; all of them, or a seeded sample of `max_examples`."""
    rng = random.Random(f"demo-code-{seed}")
    seen: set[str] = set()
    out: list[Example] = []
    for d in iter_definitions():
        if max_examples is not None and len(out) >= 3 * max_examples:
            break  # a quick corpus needn't parse the whole standard library
        if not usable(d):
            continue
        prompt = make_prompt(d, rng)
        if prompt is None or prompt in seen:
            continue
        seen.add(prompt)
        response = f"```python\n{d.source}```"
        out.append(Example(domain="code", prompt=prompt, response=response, reference=d.source,
                           source=f"{d.module}.{d.qualname}"))
    if max_examples is not None and len(out) > max_examples:
        out = [out[i] for i in sorted(rng.sample(range(len(out)), max_examples))]
    return out
