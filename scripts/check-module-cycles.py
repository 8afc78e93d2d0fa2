#!/usr/bin/env python3
"""Refuses a dependency cycle between the top-level modules of a crate.

Each crate is layered: a module may use the modules below it, never one that
uses it back (directly or through others). A module's dependencies are the
`crate::NAME` paths in its files (code, not comments), with names that the
crate root re-exports (`pub use module::Name;`) mapped to their module.
Exits 1 and names each cycle found.

    scripts/check-module-cycles.py            # every crate of the workspace and python/
"""
import os
import re
import sys
from collections import defaultdict

ROOTS = sorted(
    os.path.join("crates", c, "src") for c in os.listdir("crates")
) + ["python/src"]


def code(path):
    """A file's text without its comment lines and string contents."""
    lines = [l for l in open(path, encoding="utf-8") if not l.lstrip().startswith("//")]
    return re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', "".join(lines))


def reexports(src):
    """Names the crate root re-exports, mapped to the module they come from."""
    lib = os.path.join(src, "lib.rs")
    names = {}
    if not os.path.exists(lib):
        return names
    for module, group in re.findall(r"pub use ([a-z_0-9]+)::(\{[^}]*\}|[A-Za-z_0-9:]+)", code(lib)):
        for name in re.split(r"[{},\s]+", group):
            name = name.split("::")[-1]
            if name:
                names[name] = module
    return names


def used_modules(text, names):
    """The crate-level names a file uses: `crate::x`, and `crate::{x, y::z}`."""
    found = set(re.findall(r"\bcrate::([A-Za-z_0-9]+)", text))
    for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
        found.update(p.split("::")[0] for p in re.split(r"[,\s]+", group) if p)
    return {names.get(n, n) for n in found}


def graph(src):
    names = reexports(src)
    edges = defaultdict(set)
    modules = set()
    for directory, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(directory, f)
            top = os.path.relpath(path, src).split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            modules.add(top)
            edges[top] |= used_modules(code(path), names) - {top}
    return modules, edges


def cycles(modules, edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v] & modules):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(modules):
        if v not in index:
            visit(v)
    return out


def main():
    bad = False
    roots = [src for src in ROOTS if os.path.isdir(src)]
    for src in roots:
        modules, edges = graph(src)
        for component in cycles(modules, edges):
            bad = True
            uses = "; ".join(
                f"{m} uses {', '.join(sorted(edges[m] & set(component)))}" for m in component
            )
            print(f"{src}: modules in a cycle: {', '.join(component)} ({uses})")
    if bad:
        print("Each module may use only modules below it: pass the lower layer in as an argument instead.")
        return 1
    print(f"no module cycles in {len(roots)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
