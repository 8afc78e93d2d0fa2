#!/usr/bin/env python3
"""Refuses a dependency cycle between the modules of a crate.

Each crate is layered: a module may use the modules below it, never one that
uses it back (directly or through others). This holds at every level: between
the crate's top-level modules, and between the child modules of each module.
A module's dependencies are the `crate::...` and `super::...` paths in its
files (code, not comments, strings or an inline test module), resolved to the
longest module they name; a name that a module imports from its child
(`use child::Name;`, `pub use ...`) counts as that child. A child's use of its
own parent's items is not a dependency between siblings.
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

HEAD = re.compile(r"\b(crate|super)((?:::super)*)::")
IMPORT = re.compile(
    r"(?:pub(?:\([a-z]+\))? )?use (?:self::|crate::)?([a-z_0-9]+)::(\{[^;]*?\}|[A-Za-z_0-9:]+);"
)


def code(path):
    """A file's text without its comment lines, string contents and inline
    test module (whose `super` is the file's own module)."""
    lines = [l for l in open(path, encoding="utf-8") if not l.lstrip().startswith("//")]
    text = re.sub(r'"(?:[^"\\\n]|\\.)*"', '""', "".join(lines))
    return re.split(r"#\[cfg\(test\)\]\s*mod [a-z_0-9]+ \{", text)[0]


def module_path(src, path):
    """The module a file defines, as a tuple: `a/b.rs` and `a/b/mod.rs` are ("a", "b")."""
    parts = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def paths_after(text, start):
    """The paths written at `text[start:]` (after `crate::` or `super::`):
    `a::b::C` is [["a", "b", "C"]], `a::{b, c::d}` is [["a", "b"], ["a", "c", "d"]]."""
    segments = []
    i = start
    while True:
        m = re.match(r"[A-Za-z_0-9]+|\*", text[i:])
        if m:
            segments.append(m.group(0))
            i += m.end()
            if text.startswith("::", i):
                i += 2
                continue
            return [segments]
        if text.startswith("{", i):
            depth, j = 0, i
            while j < len(text):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    break
                j += 1
            out, item, depth = [], "", 0
            for ch in text[i + 1 : j] + ",":
                depth += {"{": 1, "}": -1}.get(ch, 0)
                if ch == "," and depth == 0:
                    item = item.strip().split(" as ")[0].strip()
                    if item == "self":
                        out.append(list(segments))
                    elif item:
                        out += [segments + p for p in paths_after(item, 0)]
                    item = ""
                else:
                    item += ch
            return out
        return [segments] if segments else []


def scan(src):
    """Each module's text, the names it imports from its children, and the
    absolute paths it names."""
    files = {}
    for directory, _, names in os.walk(src):
        for f in names:
            if f.endswith(".rs"):
                path = os.path.join(directory, f)
                mod = module_path(src, path)
                files[mod] = files.get(mod, "") + code(path)
    imports = defaultdict(dict)  # module -> {name: child}
    for mod, text in files.items():
        for child, group in IMPORT.findall(text):
            if not any(k[: len(mod) + 1] == mod + (child,) for k in files):
                continue
            for name in re.split(r"[{},\s]+", group):
                name = name.split("::")[-1]
                if name:
                    imports[mod][name] = child
    uses = defaultdict(set)  # module -> absolute paths it names
    for mod, text in files.items():
        for m in HEAD.finditer(text):
            if m.group(1) == "crate":
                base = ()
            else:
                base = mod[: len(mod) - 1 - m.group(2).count("super")]
            for path in paths_after(text, m.end()):
                uses[mod].add(base + tuple(path))
    return files, imports, uses


def graph(src):
    files, imports, uses = scan(src)
    modules = set(files)

    def is_module(path):
        return any(m[: len(path)] == path for m in modules)

    edges = defaultdict(lambda: defaultdict(set))  # parent -> child -> {siblings}
    for mod, paths in uses.items():
        for path in paths:
            # The longest module the path names, then an item in it: the
            # child module it imports that item from, if any.
            n = len(path)
            while n and not is_module(path[:n]):
                n -= 1
            target = path[:n]
            if n < len(path) and path[n] in imports[target]:
                target = target + (imports[target][path[n]],)
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
