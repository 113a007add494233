#!/usr/bin/env python3
"""Checks that the submodules of each module directory given (default: src/proxy)
import each other without a cycle, so dependencies point one way (docs/ARCHITECTURE.md).

An edge A -> B when a file of submodule A names its sibling B: `super::B` (or
`super::super::B` one level down), `crate::<module path>::B`, or `B::` inside such a
`use …::{…}` group. The parent (`mod.rs`), which declares every submodule, is left out.
Prints the edges; exits 1 and names the modules of each cycle found."""
import os
import re
import sys


def graph(root):
    crate_path = 'crate::' + '::'.join(os.path.relpath(root, 'src').split(os.sep))
    mods = set()
    for f in os.listdir(root):
        if f.endswith('.rs') and f != 'mod.rs':
            mods.add(f[:-3])
        elif os.path.isdir(os.path.join(root, f)):
            mods.add(f)
    edges = {}
    for dp, _, fs in os.walk(root):
        for f in fs:
            if not f.endswith('.rs'):
                continue
            p = os.path.join(dp, f)
            rel = os.path.relpath(p, root).split(os.sep)
            if rel == ['mod.rs']:
                continue
            a = rel[0].removesuffix('.rs')
            depth = len(rel) - (1 if f == 'mod.rs' else 0)
            src = open(p, encoding='utf-8').read()
            src = re.sub(r'//[^\n]*', '', src)
            src = re.sub(r'"(\\.|[^"\\])*"', '""', src)
            prefixes = [re.escape(crate_path) + '::', r'(?<![:\w])' + 'super::' * depth]
            names = set()
            for pre in prefixes:
                for m in re.finditer(pre + r'(\{[^}]*\}|\w+)', src):
                    g = m.group(1)
                    if g.startswith('{'):
                        names |= set(re.findall(r'(?:^|[{,\s])(\w+)(?=::|\s*[,}])', g))
                    else:
                        names.add(g)
            for n in names & mods - {a}:
                edges.setdefault(a, set()).add(n)
    return edges


def cycles(g):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main():
    bad = False
    for root in sys.argv[1:] or ['src/proxy']:
        g = graph(root.rstrip('/'))
        for a in sorted(g):
            print(f'{root}: {a} -> {", ".join(sorted(g[a]))}')
        for c in cycles(g):
            bad = True
            print(f'{root}: CYCLE among {", ".join(c)}')
    sys.exit(1 if bad else 0)


if __name__ == '__main__':
    main()
