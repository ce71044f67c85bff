"""`rulebot init DIR`: a starting deployment in DIR: rulebot.yaml (commented),
the shipped rules/ and the systemd units rulebot.service (one process, or the
supervisor of several workers) and rulebot@.service (one unit per worker). Refuses to overwrite
anything unless --force. The files come from the wheel (rulebot/examples) or,
in a source checkout, from the repository (docs/, rules/).
"""

from __future__ import annotations

import shutil
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path

import click

#: target in DIR -> (path inside the package's examples, path in a source checkout)
FILES = {
    "rulebot.yaml": ("rulebot.yaml", "docs/rulebot.example.yaml"),
    "rulebot.service": ("rulebot.service", "docs/rulebot.service"),
    "rulebot@.service": ("rulebot@.service", "docs/rulebot@.service"),
    "rules": ("rules", "rules"),
}


def source(packaged: str, checkout: str) -> Traversable:
    """Where an example is: in the installed package, else in the source tree."""
    found = resources.files("rulebot").joinpath("examples", packaged)
    if found.is_file() or found.is_dir():
        return found
    return Path(__file__).resolve().parents[2] / checkout


def copy(src: Traversable, dst: Path) -> list[Path]:
    """Copy a file, or a directory's *.yaml files (not its subdirectories)."""
    if src.is_file():
        dst.write_bytes(src.read_bytes())
        return [dst]
    dst.mkdir(exist_ok=True)
    written = []
    for item in sorted(src.iterdir(), key=lambda t: t.name):
        if item.is_file() and item.name.endswith((".yaml", ".yml")):
            (dst / item.name).write_bytes(item.read_bytes())
            written.append(dst / item.name)
    return written


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init(directory: Path, force: bool) -> None:
    """Write a starting deployment into DIRECTORY: rulebot.yaml, rules/, rulebot.service.

    Then edit rulebot.yaml (jid, server, password_file) and run
    `rulebot validate DIRECTORY/rules --config DIRECTORY/rulebot.yaml`."""
    directory.mkdir(parents=True, exist_ok=True)
    there = [directory / name for name in FILES if (directory / name).exists()]
    if there and not force:
        raise click.UsageError(f"{', '.join(map(str, there))} exist(s); --force overwrites")
    for name, (packaged, checkout) in FILES.items():
        target = directory / name
        if force and target.is_dir():
            shutil.rmtree(target)
        for path in copy(source(packaged, checkout), target):
            click.echo(f"wrote {path}")
    click.echo(f"next: edit {directory / 'rulebot.yaml'}, then "
               f"rulebot validate {directory / 'rules'} --config {directory / 'rulebot.yaml'}")
