"""Chat domain: questions about Python answered with prose from the documentation shipped with it.

Sources, all local:
- `pydoc_data.topics` (the language reference as plain text): one question per topic, per section
  heading and per documented entry such as `str.capitalize()` or `object.__init__(self[, ...])`;
- module docstrings ("What is the `textwrap` module for?");
- docstrings of C-implemented built-ins (`len`, `math.gcd`, `list.sort`, ...);
- class docstrings, and docstrings of functions and methods the code corpus leaves out (too long,
  or abstract stubs).

Answers are the leading paragraphs of that text, trimmed to `MAX_CHARS`.
"""

from __future__ import annotations

import random
import re

from sparkserve.demo.corpus_types import Example
from sparkserve.demo.corpus_code import usable
from sparkserve.demo.stdlib_source import iter_definitions, module_docstrings, trim_prose

MAX_CHARS = 1000
MIN_CHARS = 80

TOPIC_QUESTIONS = ("What is {t} in Python?", "Can you explain {t} in Python?",
                   "Tell me about {t} in Python.", "How does {t} work in Python?")
SECTION_QUESTIONS = ("In Python, what should I know about {s} ({t})?",
                     "Explain {s} in the context of {t} in Python.")
ENTRY_QUESTIONS = ("What does `{e}` do in Python?", "Explain `{e}` in Python.",
                   "How is `{e}` used in Python?")
MODULE_QUESTIONS = ("What is the `{m}` module in Python?", "What is the Python module `{m}` for?",
                    "Describe the `{m}` module of the Python standard library.")
CLASS_QUESTIONS = ("What does the `{c}` class in `{m}` do?", "Describe the class `{m}.{c}`.")
FUNC_QUESTIONS = ("What does the function `{m}.{f}` do?", "Explain `{m}.{f}` from the Python standard library.")
BUILTIN_QUESTIONS = ("What does `{n}` do in Python?", "Explain the Python built-in `{n}`.",
                     "How do I use `{n}` in Python?")
METHOD_QUESTIONS = ("What does the method `{c}.{f}` in `{m}` do?", "Explain the `{f}` method of `{m}.{c}`.")

# Modules implemented in C: their docstrings are not in Lib/*.py, so they add prose without overlap.
C_MODULES = ("builtins", "math", "cmath", "itertools", "time", "sys", "os", "binascii", "zlib", "gc",
             "marshal", "array", "signal", "unicodedata", "select", "struct", "fcntl", "grp", "pwd",
             "resource", "termios", "atexit", "errno")

_HEADING = re.compile(r"^(?P<title>\S.*)\n(?P<rule>[*=\-~^]{3,})$", re.M)
_ENTRY = re.compile(r"^(?:class )?(?P<name>[A-Za-z_][\w.]*\(.*\))$")


KEEP_CASE = {"Python", "Unicode", "Ellipsis", "None", "True", "False", "NotImplemented", "I/O"}


def _codeify(title: str) -> str:
    """'The "with" statement' -> 'the `with` statement'; 'String Methods' -> 'string methods'."""
    title = re.sub(r'"([^"]+)"', r"`\1`", title.strip())
    words = []
    for word in title.split(" "):
        bare = word.strip("()")
        if bare[:1].isupper() and bare[1:].islower() and bare not in KEEP_CASE:
            word = word.replace(bare, bare.lower())
        words.append(word)
    return " ".join(words)


def _topic_examples(rng: random.Random) -> list[tuple[str, str, str]]:
    import pydoc_data.topics as topics

    out = []
    for key in sorted(topics.topics):
        text = topics.topics[key]
        heads = list(_HEADING.finditer(text))
        if not heads:
            continue
        title = _codeify(heads[0]["title"])
        bounds = [(h, heads[i + 1].start() if i + 1 < len(heads) else len(text)) for i, h in enumerate(heads)]
        for i, (h, end) in enumerate(bounds):
            body = text[h.end():end]
            intro, entries = _split_entries(body)
            if i == 0:
                q = rng.choice(TOPIC_QUESTIONS).format(t=title)
            else:
                q = rng.choice(SECTION_QUESTIONS).format(s=_codeify(h["title"]), t=title)
            out.append((q, intro, f"topics:{key}:{i}"))
            for name, desc in entries:
                out.append((rng.choice(ENTRY_QUESTIONS).format(e=name), desc, f"topics:{key}:{name}"))
    return out


def _split_entries(body: str) -> tuple[str, list[tuple[str, str]]]:
    """Section text before its first entry, and (entry signature, dedented description) pairs."""
    lines = body.split("\n")
    intro: list[str] = []
    entries: list[tuple[str, list[str]]] = []
    for i, line in enumerate(lines):
        m = _ENTRY.match(line)
        nxt = lines[i + 2] if i + 2 < len(lines) else ""
        if m and (i + 1 >= len(lines) or not lines[i + 1].strip()) and nxt.startswith("   "):
            entries.append((m["name"], []))
        elif entries:
            entries[-1][1].append(line[3:] if line.startswith("   ") else line)
        else:
            intro.append(line)
    return "\n".join(intro), [(n, "\n".join(d)) for n, d in entries]


def _docstring_examples(rng: random.Random) -> list[tuple[str, str, str]]:
    out = [(rng.choice(MODULE_QUESTIONS).format(m=mod), doc, f"module:{mod}")
           for mod, doc in module_docstrings() if not mod.startswith("_")]
    for d in iter_definitions():
        if d.qualname.startswith("_") or "._" in d.qualname:
            continue
        if d.kind == "class":
            q = rng.choice(CLASS_QUESTIONS).format(c=d.qualname, m=d.module)
        elif usable(d):  # short definitions belong to the code corpus
            continue
        elif d.kind == "function":
            q = rng.choice(FUNC_QUESTIONS).format(f=d.signature.split("(")[0], m=d.module)
        else:
            cls, _, meth = d.qualname.partition(".")
            q = rng.choice(METHOD_QUESTIONS).format(c=cls, f=meth, m=d.module)
        out.append((q, d.docstring, f"{d.kind}:{d.module}.{d.qualname}"))
    return out


def _builtin_examples(rng: random.Random, topic_names: set[str]) -> list[tuple[str, str, str]]:
    """Docstrings of C-implemented functions, classes and methods (skipping those the topics cover)."""
    import importlib
    import inspect

    out = []
    for mod_name in C_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        prefix = "" if mod_name == "builtins" else mod_name + "."
        for name in sorted(vars(mod)):
            # sys keeps the originals of hooks that tools replace (sys.__excepthook__, ...): use those
            obj = getattr(mod, f"__{name}__", None) if mod_name == "sys" else None
            obj = obj or getattr(mod, name)
            if name.startswith("_") or not (inspect.isbuiltin(obj) or (
                    inspect.isclass(obj) and obj.__module__ == mod_name)):
                continue
            if any(t.startswith(name + ".") or t.startswith(name + "(") for t in topic_names):
                continue  # e.g. str, dict: the language reference documents them
            out.append((rng.choice(BUILTIN_QUESTIONS).format(n=prefix + name), inspect.getdoc(obj) or "",
                        f"builtin:{prefix}{name}"))
            if inspect.isclass(obj):
                for attr in sorted(vars(obj)):
                    member = vars(obj)[attr]
                    if attr.startswith("_") or not callable(member):
                        continue
                    q = rng.choice(BUILTIN_QUESTIONS).format(n=f"{prefix}{name}.{attr}")
                    out.append((q, inspect.getdoc(member) or "", f"builtin:{prefix}{name}.{attr}"))
    return out


def generate_chat(max_examples: int | None, seed: int) -> list[Example]:
    """Chat examples from the bundled documentation; all of them, or a seeded sample."""
    rng = random.Random(f"demo-chat-{seed}")
    seen: set[str] = set()
    out: list[Example] = []
    topics = _topic_examples(rng)
    topic_names = {src.split(":", 2)[2] for _, _, src in topics}
    for prompt, text, source in topics + _docstring_examples(rng) + _builtin_examples(rng, topic_names):
        answer = trim_prose(text, MAX_CHARS)
        if len(answer) < MIN_CHARS or prompt in seen:
            continue
        seen.add(prompt)
        out.append(Example(domain="chat", prompt=prompt, response=answer, reference=answer, source=source))
    if max_examples is not None and len(out) > max_examples:
        out = [out[i] for i in sorted(rng.sample(range(len(out)), max_examples))]
    return out
