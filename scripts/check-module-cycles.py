#!/usr/bin/env python3
"""Refuses a dependency cycle between the modules of a crate.

Each crate is layered: a module may use the modules below it, never one that
uses it back (directly or through others). This holds at every level: between
the crate's top-level modules, and between the child modules of each module.
A module's dependencies are the `crate::...` and `super::...` paths in its
files (code, not comments or strings), with names that a module imports
from its child (`use child::Name;`, `pub use ...`) mapped to that child. A child's use of
its own parent's items is not a dependency between siblings.
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

PATH = re.compile(r"\b((?:crate|super)(?:::super)*)::(\{[^{}]*(?:\{[^{}]*\}[^{}]*)*\}|[A-Za-z_0-9]+)")


def code(path):
    """A file's text without its comment lines and string contents."""
    lines = [l for l in open(path, encoding="utf-8") if not l.lstrip().startswith("//")]
    return re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', "".join(lines))


def module_path(src, path):
    """The module a file defines, as a tuple: `a/b.rs` and `a/b/mod.rs` are ("a", "b")."""
    parts = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def first_names(group):
    """The first segment of each path in `x` or `{x, y::z, w::{..}}`."""
    if not group.startswith("{"):
        return [group]
    inner = group[1:-1]
    depth, cur, out = 0, "", []
    for ch in inner + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            name = cur.strip().split("::")[0].split(" as ")[0].strip()
            if name and name != "self":
                out.append(name)
            cur = ""
        else:
            cur += ch
    return out


def scan(src):
    """Each module's text, its re-exports, and the paths it uses."""
    files = {}
    for directory, _, names in os.walk(src):
        for f in names:
            if f.endswith(".rs"):
                path = os.path.join(directory, f)
                files[module_path(src, path)] = files.get(module_path(src, path), "") + code(path)
    reexports = defaultdict(dict)  # module -> {name: child}
    for mod, text in files.items():
        for child, group in re.findall(r"(?:pub(?:\([a-z]+\))? )?use (?:self::)?([a-z_0-9]+)::(\{[^;]*?\}|[A-Za-z_0-9:]+);", text):
            for name in re.split(r"[{},\s]+", group):
                name = name.split("::")[-1]
                if name and any(k[: len(mod) + 1] == mod + (child,) for k in files):
                    reexports[mod][name] = child
    uses = defaultdict(set)  # module -> set of absolute target paths (module + first name)
    for mod, text in files.items():
        for head, group in PATH.findall(text):
            base = () if head.startswith("crate") else mod[: len(mod) - head.count("super")]
            for name in first_names(group):
                uses[mod].add(base + (name,))
    return files, reexports, uses


def graph(src):
    files, reexports, uses = scan(src)
    modules = set(files)

    def is_module(path):
        return any(m[: len(path)] == path for m in modules)

    edges = defaultdict(lambda: defaultdict(set))  # parent -> child -> {siblings}
    for mod, targets in uses.items():
        for target in targets:
            if not is_module(target):
                # An item: the child module that the holder re-exports it
                # from, else the holder itself.
                child = reexports[target[:-1]].get(target[-1])
                target = target[:-1] + (child,) if child else target[:-1]
            # The two children of the closest common ancestor.
            c = 0
            while c < min(len(mod), len(target)) and mod[c] == target[c]:
                c += 1
            if c < len(mod) and c < len(target):
                edges[mod[:c]][mod[c]].add(target[c])
    return modules, edges


def cycles(nodes, edges):
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, set()) & nodes):
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

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def main():
    sys.setrecursionlimit(10000)
    bad = False
    roots = [src for src in ROOTS if os.path.isdir(src)]
    for src in roots:
        modules, edges = graph(src)
        for parent in sorted(edges):
            children = {m[len(parent)] for m in modules if len(m) > len(parent) and m[: len(parent)] == parent}
            for component in cycles(children, edges[parent]):
                bad = True
                where = "::".join(parent) or "the crate root"
                uses = "; ".join(
                    f"{m} uses {', '.join(sorted(edges[parent][m] & set(component)))}" for m in component
                )
                print(f"{src}: in {where}, modules in a cycle: {', '.join(component)} ({uses})")
    if bad:
        print("Each module may use only modules below it: pass the lower layer in as an argument instead.")
        return 1
    print(f"no module cycles in {len(roots)} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
