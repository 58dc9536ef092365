#!/usr/bin/env python3
"""Fails if the modules of any workspace crate import each other in a cycle.

A crate's modules form a tree (`src/a.rs`, `src/a/b.rs`, ...). For every module with
children (the crate root included), its children are the nodes of one graph: an edge
A -> B means some file under A names an item under B, through `crate::`, `super::` or
`self::` paths (in `use` trees and inline). Names re-exported by a parent (`pub use
b::Item;`) resolve to the child that defines them. References between a module and its own
ancestors or descendants are not edges (a `tests` child using `super::*` is no cycle).
Every such graph must be acyclic; the script prints each cycle it finds.

Usage: module_cycles.py [crate dir ...]  (default: every member of the workspace)
"""
import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def module_files(src):
    """Maps module path tuples to their files."""
    mods = {}
    roots = [p for p in (src / "lib.rs", src / "main.rs") if p.exists()]
    if not roots:
        return mods

    def walk(path, file):
        mods[path] = file
        text = strip_comments_and_strings(file.read_text())
        if file.name in ("lib.rs", "main.rs", "mod.rs"):
            base = file.parent
        else:
            base = file.parent / file.stem
        for m in re.finditer(r"(?m)^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(" + IDENT + r")\s*;", text):
            name = m.group(1)
            # `#[path = "..."]` is not used in this workspace; plain layout only.
            for cand in (base / f"{name}.rs", base / name / "mod.rs"):
                if cand.exists():
                    walk(path + (name,), cand)
                    break

    walk((), roots[0])
    return mods


def use_paths(tree, prefix=()):
    """Expands a `use` tree (`a::{b, c::d}`) into full paths."""
    tree = tree.strip()
    out = []
    m = re.match(r"^((?:" + IDENT + r"\s*::\s*)*)\{(.*)\}$", tree, flags=re.S)
    if m:
        head = tuple(p.strip() for p in m.group(1).split("::") if p.strip())
        depth, part, parts = 0, "", []
        for ch in m.group(2):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                parts.append(part)
                part = ""
            else:
                part += ch
        parts.append(part)
        for p in parts:
            if p.strip():
                out.extend(use_paths(p, prefix + head))
        return out
    path = re.split(r"\s+as\s+", tree)[0]
    segs = tuple(s.strip() for s in path.split("::") if s.strip())
    return [prefix + segs]


def references(text):
    """Every path starting with crate/super/self that the file names."""
    refs = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        refs.extend(use_paths(m.group(1)))
    for m in re.finditer(r"\b((?:crate|super|self)(?:\s*::\s*" + IDENT + r")+)", text):
        refs.append(tuple(s.strip() for s in m.group(1).split("::")))
    return refs


def resolve(current, path, mods, reexports):
    """Resolves a reference made in module `current` to the deepest module it names."""
    if not path:
        return None
    if path[0] == "crate":
        base, rest = (), path[1:]
    elif path[0] in ("super", "self"):
        base, rest = current, path
        while rest and rest[0] in ("super", "self"):
            if rest[0] == "super":
                base = base[:-1]
            rest = rest[1:]
    else:
        return None
    node = base
    for seg in rest:
        if node + (seg,) in mods:
            node = node + (seg,)
        elif (node, seg) in reexports:
            node = reexports[(node, seg)]
        else:
            break
    return node


def check_crate(crate_dir):
    src = crate_dir / "src"
    mods = module_files(src)
    texts = {p: strip_comments_and_strings(f.read_text()) for p, f in mods.items()}
    # `pub use child::Item;` in a module: `module::Item` means the child.
    reexports = {}
    for _ in range(3):  # re-exports of re-exports
        for p, text in texts.items():
            for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
                for path in use_paths(m.group(1)):
                    target = resolve(p, path if path[0] in ("crate", "super", "self") else ("self",) + path, mods, reexports)
                    if target is not None and target != p:
                        reexports[(p, path[-1])] = target
    edges = set()
    for p, text in texts.items():
        for ref in references(text):
            t = resolve(p, ref, mods, reexports)
            if t is None or t == p:
                continue
            if t[: len(p)] == p or p[: len(t)] == t:
                continue  # ancestor or descendant
            # Edge between the children of the common ancestor.
            i = 0
            while i < min(len(p), len(t)) and p[i] == t[i]:
                i += 1
            edges.add((p[: i + 1], t[: i + 1]))
    graph = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles = []
    color = {}
    stack = []

    def dfs(n):
        color[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if color.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif not color.get(m):
                dfs(m)
        stack.pop()
        color[n] = 2

    for n in sorted(graph):
        if not color.get(n):
            dfs(n)
    return cycles, len(mods)


def workspace_members(root):
    text = (root / "Cargo.toml").read_text()
    m = re.search(r"members\s*=\s*\[([^\]]*)\]", text)
    return [root / s for s in re.findall(r'"([^"]+)"', m.group(1))] if m else []


def main():
    root = Path(__file__).resolve().parent.parent
    crates = [Path(a) for a in sys.argv[1:]] or workspace_members(root)
    failed = False
    for crate in crates:
        cycles, n = check_crate(crate)
        name = crate.name
        if cycles:
            failed = True
            for c in cycles:
                print(f"{name}: cycle: " + " -> ".join("::".join(m) or "crate" for m in c))
        else:
            print(f"{name}: {n} modules, no import cycle")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
