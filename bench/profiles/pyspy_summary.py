"""Summarise a ``py-spy record -f raw`` profile: the top functions by own and inclusive samples.

``python -m bench.profiles.pyspy_summary PROFILE.txt [--thread NAME] [--top N]`` prints the
share of samples per thread, then the functions (file and name, lines merged) that were on top
of the stack most often (*self*) and those of this project (``kafkastore/``, ``writer/``,
``indexer/``, ``consumers/``) that were anywhere on it (*inclusive*). ``--thread`` keeps the
samples whose first frame contains NAME: the thread's name when recorded with ``--threads``,
else its outermost function (``runpy``: the main thread, e.g. the indexer's loop without its
sleeping ticker and scavenger threads). The summaries in ``bench/results/profiles/`` are its
output.
"""

from __future__ import annotations

import argparse
import collections
import re

PROJECT = ("kafkastore/", "writer/", "indexer/", "consumers/")
_LINE = re.compile(r":\d+\)$")


def summarise(path: str, *, thread: str | None, top: int) -> str:
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    total = 0
    with open(path) as fh:
        for line in fh:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            frames = stack.split(";")
            name = frames[0]
            threads[name] += int(count)
            if thread and thread not in name:
                continue
            n = int(count)
            total += n
            names = [_LINE.sub(")", f) for f in frames[1:]]
            if names:
                own[names[-1]] += n
            for f in set(names):
                inclusive[f] += n
    every = sum(threads.values()) or 1
    out = [f"samples: {total} of {every}" + (f" (threads matching {thread!r})" if thread else "")]
    out.append("-- by thread")
    out += [f"{100 * c / every:5.1f}% {t}" for t, c in threads.most_common(8)]
    total = total or 1
    out.append("-- self")
    out += [f"{100 * c / total:5.1f}% {f}" for f, c in own.most_common(top)]
    out.append("-- inclusive (this project's functions)")
    ours = [(f, c) for f, c in inclusive.most_common() if any(p in f for p in PROJECT)]
    out += [f"{100 * c / total:5.1f}% {f}" for f, c in ours[:top]]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profiles.pyspy_summary")
    parser.add_argument("profile")
    parser.add_argument("--thread", help="only samples whose first frame contains this")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    print(summarise(args.profile, thread=args.thread, top=args.top))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
