#!/usr/bin/env python3
"""Import graph of crates/qevo/src's top-level modules; fails on an arrow that runs back up.

DESIGN's pipeline order (docs/design.md), lowest first: a module may use `crate::X` only
for an X listed before it (or itself). Prints every arrow between modules with the files
that make it, marks the ones that run back up with `BACK`, and exits 1 when there is one.
`#[cfg(test)]` code counts too: a test that reaches up is still a loop in the build graph.
"""
import pathlib
import re
import sys

# Lowest first: the error types and small helpers, then the pipeline (docs/design.md,
# "The pipeline"). quant's formats are codecs the loaders use, so they sit below model;
# hw's profiles and cost model below plan, which prices a plan on them; calib runs the
# model (under a plan) over calibration windows, eval scores plans, tune trains one,
# export writes one (tuned or not), search runs the stages, report and recipe sit on top.
ORDER = [
    "error", "fsutil", "mem", "assets",
    "quant",
    "model",
    "hw",
    "plan",
    "calib",
    "eval",
    "tune",
    "export",
    "search",
    "report",
    "recipe",
]
RANK = {m: i for i, m in enumerate(ORDER)}

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates" / "qevo" / "src"
# `crate::x` anywhere, and `crate::{x, y::z}` groups (one level deep is all the tree uses).
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
GROUP = re.compile(r"\bcrate::\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", re.S)


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".rs")


def strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def targets(text: str):
    found = set(PATH.findall(text))
    for group in GROUP.findall(text):
        depth = 0
        item = ""
        for ch in group + ",":
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                name = item.strip().split("::", 1)[0].strip()
                if re.fullmatch(r"[a-z_][a-z0-9_]*", name):
                    found.add(name)
                item = ""
            else:
                item += ch
    return found


def main() -> int:
    edges = {}
    for path in sorted(ROOT.rglob("*.rs")):
        src = module_of(path)
        if src == "lib":
            continue
        for dst in targets(strip_comments(path.read_text())):
            if dst == src or dst not in RANK and dst in ("self", "super"):
                continue
            edges.setdefault((src, dst), set()).add(str(path.relative_to(ROOT)))
    unknown = sorted({m for e in edges for m in e if m not in RANK})
    if unknown:
        print(f"modules missing from ORDER in {__file__}: {', '.join(unknown)}")
        return 1
    back = []
    for (src, dst), files in sorted(edges.items(), key=lambda e: (RANK[e[0][0]], RANK[e[0][1]])):
        up = RANK[dst] > RANK[src]
        mark = "BACK" if up else "    "
        print(f"{mark} {src:>7} -> {dst:<7} {' '.join(sorted(files))}")
        if up:
            back.append((src, dst))
    print(f"{len(edges)} arrows, {len(back)} back up the pipeline "
          f"({' < '.join(ORDER)})")
    return 1 if back else 0


if __name__ == "__main__":
    sys.exit(main())
