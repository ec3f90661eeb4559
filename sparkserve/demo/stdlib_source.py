"""Walks the running interpreter's standard library sources (shared by the code and chat corpora).

The walk is deterministic: files sorted by path, definitions in source order. The result depends on
the interpreter (its version and its `Lib/` files), so the corpus is reproducible on one machine and
image, not across Python versions.
"""

from __future__ import annotations

import ast
import functools
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "turtledemo", "__pycache__", "__phello__",
             "ensurepip", "lib2to3", "pydoc_data"}


@dataclass(frozen=True)
class Definition:
    """A module-level function or class, or a method, that has a docstring.

    `qualname` is `name` or `Class.name`; `source` is dedented source text (decorators included);
    `num_lines` counts its lines.
    """

    module: str
    kind: str  # "function" | "method" | "class"
    qualname: str
    signature: str  # "name(args)" for functions and methods, "Name" for classes
    docstring: str
    source: str
    num_lines: int


def stdlib_files() -> list[Path]:
    """`Lib/*.py` and `Lib/<package>/*.py`, sorted, without tests, IDLE and third-party code."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = list(root.glob("*.py")) + list(root.glob("*/*.py"))
    keep = [f for f in files if not (set(f.relative_to(root).parts[:-1]) & SKIP_DIRS)]
    return sorted(keep, key=lambda f: f.relative_to(root).as_posix())


def module_name(path: Path) -> str:
    root = Path(sysconfig.get_paths()["stdlib"])
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@functools.lru_cache(maxsize=None)
def parse_module(path: str) -> tuple[str, ast.Module] | None:
    try:
        text = Path(path).read_text(encoding="utf-8")
        return text, ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None


def _segment(text_lines: list[str], node: ast.AST) -> str:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    lines = text_lines[first - 1:node.end_lineno]
    indent = len(lines[0]) - len(lines[0].lstrip())
    out = []
    for line in lines:
        if line.strip() and not line[:indent].isspace() and indent:
            return ""  # continuation lines less indented than the def: skip this definition
        out.append(line[indent:] if line.strip() else "")
    return "\n".join(out).rstrip() + "\n"


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    return f"{node.name}({ast.unparse(node.args)})"


def iter_definitions() -> Iterator[Definition]:
    """Every documented function, method and class of the standard library, in a stable order."""
    for path in stdlib_files():
        out: list[Definition] = []
        parsed = parse_module(str(path))
        if parsed is None:
            continue
        text, tree = parsed
        lines = text.splitlines()
        mod = module_name(path)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                _add(out, mod, "function", node.name, _signature(node), node, lines)
            elif isinstance(node, ast.ClassDef):
                _add(out, mod, "class", node.name, node.name, node, lines)
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        _add(out, mod, "method", f"{node.name}.{sub.name}", _signature(sub), sub, lines)
        yield from out


def _add(out: list[Definition], mod: str, kind: str, qualname: str, signature: str,
         node: ast.AST, lines: list[str]) -> None:
    doc = ast.get_docstring(node)
    if not doc:
        return
    source = _segment(lines, node)
    if not source:
        return
    out.append(Definition(module=mod, kind=kind, qualname=qualname, signature=signature,
                          docstring=doc, source=source, num_lines=source.count("\n")))


def module_docstrings() -> list[tuple[str, str]]:
    """(module name, docstring) for every documented stdlib module, sorted by module."""
    out = []
    for path in stdlib_files():
        parsed = parse_module(str(path))
        if parsed is None:
            continue
        doc = ast.get_docstring(parsed[1])
        if doc:
            out.append((module_name(path), doc))
    return out


# --- docstring text helpers ----------------------------------------------------------------------

def paragraphs(text: str) -> list[str]:
    """Split on blank lines; reflow plain paragraphs onto one line, keep indented blocks verbatim."""
    out = []
    for block in text.strip("\n").split("\n\n"):
        lines = [ln.rstrip() for ln in block.split("\n") if ln.strip()]
        if not lines:
            continue
        if any(ln.startswith((" ", "\t", ">>>", "|", "-", "*", "+")) for ln in lines) or any(
                "::=" in ln for ln in lines):
            out.append("\n".join(lines))
        else:
            out.append(" ".join(ln.strip() for ln in lines))
    return out


def first_sentence(doc: str) -> str:
    """The first sentence of the first paragraph, on one line, without its final period."""
    paras = paragraphs(doc)
    if not paras:
        return ""
    para = paras[0].replace("\n", " ")
    for end in (". ", ".\t"):
        cut = para.find(end)
        if cut > 0:
            para = para[:cut]
            break
    return " ".join(para.split()).rstrip(".").strip()


def trim_prose(text: str, max_chars: int) -> str:
    """Leading paragraphs of `text` up to `max_chars`; an over-long first paragraph is cut at a sentence."""
    kept: list[str] = []
    size = 0
    for para in paragraphs(text):
        if kept and size + len(para) + 2 > max_chars:
            break
        if not kept and len(para) > max_chars:
            cut = para.rfind(". ", 0, max_chars)
            para = para[:cut + 1] if cut > 0 else para[:max_chars].rsplit(" ", 1)[0] + " ..."
        kept.append(para)
        size += len(para) + 2
    while kept and kept[-1].endswith(":"):  # don't end on an introduction to a dropped block
        kept.pop()
    return "\n\n".join(kept)
