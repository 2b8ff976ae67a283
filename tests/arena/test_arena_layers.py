"""The arena's imports run one way: each module imports only modules of lower layers, as the table
in docs/arena.md ("Code layout") says, and challenges import only the challenge-side modules."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARENA = ROOT / "src" / "assay" / "arena"
CHALLENGE_SIDE = {"challenge", "payload", "kit"}


def documented_layers() -> dict[str, int]:
    text = (ROOT / "docs" / "arena.md").read_text()
    section = text.split("## Code layout", 1)[1].split("\n## ", 1)[0]
    layers = {}
    for number, modules in re.findall(r"^\| (\d+) \| ([^|]+) \|", section, re.M):
        for name in re.findall(r"`(\w+)`", modules):
            layers[name] = int(number)
    return layers


def arena_imports(path: Path) -> set[str]:
    """The arena modules ``path`` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "assay.arena":
                found |= {a.name for a in node.names}
            elif node.module.startswith("assay.arena."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[2] for a in node.names if a.name.startswith("assay.arena.")}
    return found


def test_every_module_imports_only_lower_layers():
    layers = documented_layers()
    modules = {p.stem: p for p in ARENA.glob("*.py") if p.stem != "__init__"}
    assert set(modules) == set(layers), "every arena module has one row in docs/arena.md's layer table"
    wrong = [f"{name} (layer {layers[name]}) imports {other} (layer {layers[other]})"
             for name, path in sorted(modules.items()) for other in sorted(arena_imports(path))
             if layers[other] >= layers[name]]
    assert not wrong, "\n".join(wrong)


def test_challenges_import_only_the_challenge_side():
    paths = sorted(ARENA.glob("challenges/*/challenge.py"))
    assert len(paths) >= 9
    wrong = {p.parent.name: arena_imports(p) - CHALLENGE_SIDE for p in paths if arena_imports(p) - CHALLENGE_SIDE}
    assert not wrong


def test_the_check_sees_function_level_and_package_imports(tmp_path):
    # the check would miss the cycle this issue removed if it read module-level imports only
    sample = tmp_path / "m.py"
    sample.write_text("from assay.arena import auth, names\n\ndef f():\n    from assay.arena.service import x\n"
                      "    import assay.arena.store\n")
    assert arena_imports(sample) == {"auth", "names", "service", "store"}
