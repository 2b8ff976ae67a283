"""Imports flow one way: every assay module imports only from its own layer or the layers below.

The layers are drawn in docs/architecture.md. Imports inside functions count too: a lazy import
that runs back up the layers is still a dependency.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "assay"

# lowest first; a package may import its own layer and any layer listed before it
LAYERS = [
    {"errors", "stats", "findings", "outcomes", "version"},
    {"metrics", "images", "parallel", "inference", "generation", "train"},
    {"targets"},
    {"data"},
    {"attacks", "explain", "shifts"},
    {"guarantees", "integrity"},
    {"probes"},
    {"report"},
    {"engine"},
    {"compare"},
    {"cli", "train_cli", "demos", "arena", "__main__", ""},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "assay" else [f"assay.{a.name}" for a in node.names]
            out += [(n, node.lineno) for n in names if n.split(".")[0] == "assay"]
        elif isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "assay"]
    return out


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    packages |= {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages <= set(RANK), f"add {sorted(packages - set(RANK))} to LAYERS and docs/architecture.md"


def test_imports_never_run_back_up_the_layers():
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        own = RANK[_package(module)]
        for imported, line in _imports(path):
            if RANK.get(_package(imported), -1) > own:
                upward.append(f"{path.relative_to(SRC.parent)}:{line} imports {imported}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)
