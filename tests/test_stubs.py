"""The .pyi stubs describe exactly what the native module exports."""

from __future__ import annotations

import ast
import pathlib

import s3dlio
import s3dlio._native as native

STUB = pathlib.Path(s3dlio.__file__).with_name("_native.pyi")


def stub_names() -> dict[str, set[str]]:
    tree = ast.parse(STUB.read_text())
    names: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names[node.name] = set()
        elif isinstance(node, ast.ClassDef):
            names[node.name] = {
                n.name if isinstance(n, ast.FunctionDef) else n.target.id  # type: ignore[union-attr]
                for n in node.body
                if isinstance(n, ast.FunctionDef)
                or (isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name))
            }
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = set()
    return names


def test_every_export_is_stubbed_and_every_stub_exists() -> None:
    stubs = stub_names()
    exported = {n for n in dir(native) if not n.startswith("_")} | {"__version__"}
    assert exported == set(stubs) - {"StorageOptions"}
    for cls, members in stubs.items():
        obj = getattr(native, cls, None)
        if isinstance(obj, type) and cls != "IntegrityError":
            missing = {m for m in members if not hasattr(obj, m) and m != "__init__"}
            assert not missing, f"{cls}: stubbed but missing {missing}"
            public = {m for m in dir(obj) if not m.startswith("_")}
            assert public <= members, f"{cls}: exported but not stubbed {public - members}"
