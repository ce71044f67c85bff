"""The wheel carries the JSON Schemas, so `pip install` users have them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_the_schemas(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("rulebot-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for schema in ("rules", "config", "ruletest"):
        assert f"rulebot/schemas/{schema}.schema.json" in names
    assert "rulebot/engine/evaluate.py" in names
