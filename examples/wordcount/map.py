"""Map: count the words of input.txt into output.txt, one "word count" line each."""

import collections
import os
import re
from pathlib import Path

root = Path(os.environ["ROOT_FOLDER"])
words = re.findall(r"[a-z']+", (root / "input.txt").read_text(encoding="utf-8").lower())
counts = collections.Counter(words)
(root / "output.txt").write_text("".join(f"{word} {n}\n" for word, n in sorted(counts.items())), encoding="utf-8")
