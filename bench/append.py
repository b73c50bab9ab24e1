"""The benchmark's handler: append one byte to every file, so everything goes back up."""

import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else os.environ["ROOT_FOLDER"]
for folder, _, files in os.walk(root):
    for name in files:
        with open(os.path.join(folder, name), "ab") as f:
            f.write(b"!")
