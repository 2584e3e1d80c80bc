"""Print, as JSON, every import cycle among the modules of the ``iiif_shim`` package found on
``sys.path`` (strongly connected groups of two or more modules), whatever kind of import makes
it: at module level, inside a function, under ``TYPE_CHECKING``, through a package's face.
Run in a fresh interpreter (``tests/unit/test_static.py`` does), so the package it reads is the
one on its path, not one already imported."""

from __future__ import annotations

import json
import sys

import grimp


def cycles(package: str) -> list[list[str]]:
    graph = grimp.build_graph(package, cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return sorted(found)


if __name__ == "__main__":
    print(json.dumps(cycles(sys.argv[1] if len(sys.argv) > 1 else "iiif_shim")))
