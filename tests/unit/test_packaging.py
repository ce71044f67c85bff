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
    # What `rulebot init` writes, and the licence the metadata declares.
    for example in ("rulebot.yaml", "rulebot.service", "rulebot@.service",
                    "rules/20-service.yaml"):
        assert f"rulebot/examples/{example}" in names
    assert "rulebot/LICENSE" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_init_writes_a_deployment_that_validates(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from rulebot.cli.main import main

    target = tmp_path / "deploy"
    result = CliRunner().invoke(main, ["init", str(target)])
    assert result.exit_code == 0, result.output
    assert (target / "rulebot.service").read_text().startswith("# /etc/systemd/system/")
    checked = CliRunner().invoke(main, ["validate", str(target / "rules"),
                                        "--config", str(target / "rulebot.yaml")])
    assert checked.exit_code == 0, checked.output
    again = CliRunner().invoke(main, ["init", str(target)])
    assert again.exit_code == 2  # nothing overwritten without --force
    assert "--force" in again.output
    (target / "rules" / "20-service.yaml").write_text("edited")
    assert CliRunner().invoke(main, ["init", "--force", str(target)]).exit_code == 0
    assert (target / "rules" / "20-service.yaml").read_text() != "edited"
