#!/usr/bin/env python3
"""No import cycle between the modules of a crate (control/src, relay/src).

A module is a top-level module of the crate (a file `x.rs` or a directory `x/` with its
submodules), except that a directory whose `mod.rs` only declares and re-exports its
submodules (relay's `afxdp`) is a namespace: each of its submodules is a module of its own.
Every `crate::` and `super::` path in a file is an edge from the file's module to the
module the path names. A cycle is printed with the lines that make it and fails the check.

Usage: tests/imports.py CRATE_SRC_DIR...  (tests/run.sh runs it on control/src relay/src)
"""

import re
import sys
from pathlib import Path

PATH = re.compile(r"\b(crate|super)((?:::\w+)+)")
INLINE = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")
ITEMS = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(mod|use)\b")


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def module_path(src, f):
    parts = list(f.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def is_namespace(src, name):
    m = src / name / "mod.rs"
    if not m.exists():
        return False
    body = strip_comments(m.read_text())
    lines = [line for line in body.splitlines() if line.strip()]
    # Only `mod`/`use` items (a `use` may span lines: its continuation lines end in `,`,
    # `{` or `};`).
    in_use = False
    for line in lines:
        if in_use:
            in_use = not line.rstrip().endswith(";")
            continue
        if not ITEMS.match(line):
            return False
        in_use = not line.rstrip().endswith(";")
    return True


def node(src, parts):
    if not parts:
        return None
    if len(parts) >= 2 and is_namespace(src, parts[0]):
        return "::".join(parts[:2])
    return parts[0]


def resolve(src, here, kind, rest, modules):
    """The file-module path a `crate::`/`super::` path names (its longest module prefix)."""
    names = rest.strip(":").split("::")
    if kind == "crate":
        base = []
    else:
        base = here[:-1]
        while names and names[0] == "super":
            base = base[:-1]
            names = names[1:]
    full = base + names
    for n in range(len(full), 0, -1):
        if tuple(full[:n]) in modules:
            return full[:n]
    return None


def cycles(src):
    files = sorted(src.rglob("*.rs"))
    modules = {tuple(module_path(src, f)) for f in files}
    edges = {}
    for f in files:
        here = module_path(src, f)
        # A file `x/mod.rs` is at `x`, as is `x.rs` with submodules in `x/`: a `super::`
        # in either names x's parent.
        a = node(src, here)
        text = strip_comments(f.read_text())
        inline = False
        for lineno, line in enumerate(text.splitlines(), 1):
            # After an inline `mod name {` (tests, mostly), `super::` is this file's module.
            if INLINE.match(line):
                inline = True
            for m in PATH.finditer(line):
                kind, rest = m.group(1), m.group(2)
                at = here + ["(inline)"] if inline else here
                if kind == "super" and not at:
                    continue
                target = resolve(src, at, kind, rest, modules)
                b = node(src, target) if target else None
                if a and b and a != b:
                    edges.setdefault(a, {}).setdefault(b, f"{f}:{lineno}")
    found = []
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, {})):
            if state.get(m) == 1:
                found.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    return found, edges


def main():
    bad = False
    for d in sys.argv[1:]:
        src = Path(d)
        found, edges = cycles(src)
        for c in found:
            bad = True
            print(f"{src}: import cycle {' -> '.join(c)}")
            for a, b in zip(c, c[1:]):
                print(f"    {a} -> {b}: {edges[a][b]}")
        if not found:
            n = sum(len(v) for v in edges.values())
            print(f"{src}: no import cycle ({len(edges)} modules importing, {n} edges)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
