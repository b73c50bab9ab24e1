"""The seed's example handler: read input.txt under ROOT_FOLDER, write output.txt."""

import os
from pathlib import Path

base_path = Path(os.getenv("ROOT_FOLDER", "."))
data = (base_path / "input.txt").read_text(encoding="utf-8")
(base_path / "output.txt").write_text(data.upper(), encoding="utf-8")
