"""The layout holds: the wheel is the product, the product never imports its tooling, and the
fake chain servers build their answers without the code they are used to test."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("verifier", "chains")
TOOLING = ("devchain", "tests")
# The local chain servers and ledgers of devchain: what they answer must not come from chains/
# or verifier/, or a bug there would be served back to the very tests that should catch it.
FAKES = (
    "anvil",
    "horizon",
    "http_server",
    "service",
    "solana_ledger",
    "solana_render",
    "solana_server",
    "stellar_ledger",
    "stellar_wallet",
    "stub",
    "ton_chain",
    "ton_v3",
    "toncenter",
)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, wherever the import stands (also inside functions, and
    through ``importlib.import_module("...")`` with a literal name)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def roots(names: set[str]) -> set[str]:
    return {name.partition(".")[0] for name in names}


def test_the_product_never_imports_its_tooling() -> None:
    modules = sorted(p for package in PRODUCT for p in (ROOT / package).rglob("*.py"))
    assert len(modules) > 20  # the scan found the packages
    offenders = {
        str(p.relative_to(ROOT)): sorted(roots(imported(p)) & set(TOOLING)) for p in modules
    }
    assert {path: found for path, found in offenders.items() if found} == {}


def test_the_fakes_import_nothing_of_the_product() -> None:
    forbidden = {*PRODUCT, "tests"}
    found = {name: roots(imported(ROOT / "devchain" / f"{name}.py")) & forbidden for name in FAKES}
    assert {name: sorted(hits) for name, hits in found.items() if hits} == {}


def test_the_wheel_holds_the_product_only(tmp_path: Path) -> None:
    """Built from a copy of the tree (devchain/ and tests/ included), as pip would build it."""
    source = tmp_path / "src"
    heavy = (".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "*cache*", ".demo")
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*heavy, "__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    built = subprocess.run(
        [*pip, "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "wheel")],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.partition("/")[0] for name in names}
    assert tops == {*PRODUCT, "x402_verifier-0.1.0.dist-info"}
    for package in PRODUCT:
        assert f"{package}/__init__.py" in names and f"{package}/py.typed" in names
    assert "chains/ton/codec.py" in names and "verifier/worker.py" in names
    metadata = "".join(
        zipfile.ZipFile(wheel).read(n).decode() for n in names if n.endswith(".dist-info/RECORD")
    )
    assert not any(part in metadata for part in ("devchain", "tests/"))


def test_the_image_copies_the_product_only() -> None:
    copied = [
        source
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert copied == ["pyproject.toml", "README.md", *PRODUCT]
