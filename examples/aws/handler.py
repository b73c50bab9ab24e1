"""The AWS example's handler: every CSV file under ROOT_FOLDER becomes a JSON Lines file beside it.

`incoming/orders.csv` -> `incoming/orders.jsonl`, one JSON object per row, keyed by the header.
The bridge uploads what this writes (to TARGET_BUCKET); a file that is not CSV text fails the run,
with its traceback in the log, and the message is retried, then kept in the dead-letter queue.
"""

import csv
import json
import os
from pathlib import Path

root = Path(os.environ["ROOT_FOLDER"])
for source in sorted(root.rglob("*.csv")):
    target = source.with_suffix(".jsonl")
    with source.open(newline="", encoding="utf-8") as rows, target.open("w", encoding="utf-8") as out:
        count = 0
        for row in csv.DictReader(rows):
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    print(f"{source.relative_to(root)}: {count} rows")
