#!/usr/bin/env python3
"""Fails when the crate's modules import each other in a cycle.

Reads the module-level "uses" graph that `cargo modules dependencies` prints (DOT, with
functions, types and traits folded into the module that holds them, and ownership edges left
out) and reports every strongly connected component of more than one module, with the edges
that close it. `cargo modules dependencies --acyclic` itself checks the unfolded item graph,
where a method naming its own type is already a cycle, so it cannot answer this question.

A module and its own submodules count as one unit: a child sees its parent's private items by
design, and cargo-modules files every method of a type under the type's module even when the
`impl` block lives in a child (`store::read` adds queries to `store::Store`), which would make
every split `impl` look like a cycle. Edges between a module and its ancestor are therefore left
out; cycles between siblings, cousins and unrelated modules fail.

cargo-modules sees `use` items, not a path written in an expression (`crate::http::router(..)`
inside a function), so with `--src DIR` the script also reads the crate's sources and adds an
edge for every `crate::…` path outside test code, resolved to the longest module the graph
knows.

Usage: cargo modules dependencies --lib --no-externs --no-sysroot --no-fns --no-traits \
           --no-types --no-owns | scripts/check_cycles.py --src src
"""

import os
import re
import sys

EDGE = re.compile(r'^\s*"([^"]+)"\s*->\s*"([^"]+)"\s*\[label="uses"')


def related(a, b):
    """Whether one module is the other's ancestor."""
    return a.startswith(b + "::") or b.startswith(a + "::")


def components(nodes, edges):
    """Tarjan's strongly connected components, iteratively."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []
    counter = 0
    for root in sorted(nodes):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    scc.append(member)
                    if member == node:
                        break
                out.append(sorted(scc))
    return out


PATH = re.compile(r"\bcrate((?:::[a-z_][a-z0-9_]*)+)")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*(;|\{)")


def source_edges(src, crate, modules):
    """`crate::…` paths in non-test code, as (module, module) edges."""
    out = []
    for root, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(root, name)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if rel and rel[-1] == "tests" or rel[:1] == ["testing"]:
                continue
            module = "::".join([crate] + rel)
            text = open(path, encoding="utf-8").read()
            m = TEST_MOD.search(text)
            if m and m.group(1) == "{":
                text = text[: m.start()]
            for line in text.splitlines():
                if line.lstrip().startswith("//"):
                    continue
                for p in PATH.findall(line):
                    parts = [crate] + p.strip(":").split("::")
                    while parts and "::".join(parts) not in modules:
                        parts.pop()
                    if len(parts) > 1:
                        out.append((module, "::".join(parts)))
    return out


def main():
    src = sys.argv[sys.argv.index("--src") + 1] if "--src" in sys.argv else None
    edges, nodes = {}, set()
    for line in sys.stdin:
        m = EDGE.match(line)
        if not m:
            continue
        a, b = m.groups()
        nodes.update((a, b))
        if a != b and not related(a, b):
            edges.setdefault(a, set()).add(b)
    if not nodes:
        print("check_cycles: no module graph on stdin (did cargo-modules fail?)", file=sys.stderr)
        return 2
    if src:
        crate = min(nodes, key=len).split("::")[0]
        for a, b in source_edges(src, crate, nodes):
            if a in nodes and a != b and not related(a, b):
                edges.setdefault(a, set()).add(b)
    cycles = [c for c in components(nodes, edges) if len(c) > 1]
    if not cycles:
        print(f"check_cycles: {len(nodes)} modules, {sum(map(len, edges.values()))} uses edges, no cycles")
        return 0
    for scc in cycles:
        members = set(scc)
        print(f"cycle among {len(scc)} modules:")
        for a in scc:
            for b in sorted(edges.get(a, ())):
                if b in members:
                    print(f"    {a} -> {b}")
    print(f"check_cycles: {len(cycles)} cycle(s)")
    return 1


if __name__ == "__main__":
    sys.exit(main())
