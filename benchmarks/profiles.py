"""Summarise py-spy raw (collapsed) stacks: ``python -m benchmarks.profiles FILE [--top N]``.

Prints the functions with the most samples on top of the stack (self) and anywhere in
it (inclusive), as a share of all samples, idle samples included. ``--profile DIR`` of
the harness writes one such file per profiled process and phase.
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def summarise(path: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        count = int(m["count"])
        frames = [re.sub(r" \(([^)]*/)?([^/)]+?)(:\d+)?\)$", r" (\2)", f) for f in m["stack"].split(";")]
        total += count
        own[frames[-1]] += count
        for f in set(frames):
            inclusive[f] += count
    if not total:
        return f"{path}: no samples"
    lines = [f"{path.name}: {total} samples", "  self:"]
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profiles")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    for f in args.files:
        print(summarise(f, args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
