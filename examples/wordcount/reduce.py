"""Reduce: add up every folder's output.txt into total.txt, most frequent first."""

import collections
import os
from pathlib import Path

root = Path(os.environ["ROOT_FOLDER"])
total: collections.Counter = collections.Counter()
for output in sorted(root.glob("*/output.txt")):
    for line in output.read_text(encoding="utf-8").splitlines():
        word, n = line.split()
        total[word] += int(n)
lines = [f"{word} {n}\n" for word, n in sorted(total.items(), key=lambda item: (-item[1], item[0]))]
(root / "total.txt").write_text("".join(lines), encoding="utf-8")
