"""What an item directory written by `S3DlioCheckpointHandler` holds.

::

    <step>/<item>/
      d.p00000.000.bin ...        packed pieces of process 0 (one writer thread each)
      index.p00000.json ...       what each process wrote, written after its data
      s3dlio_index.json           the merged index, written by the primary in
                                  finalize, before Orbax's commit file

The index is JSON so that ``s3dlio info`` / ``s3dlio verify`` (Rust) read
it too. Each leaf records its tree path, kind, dtype and shape; each piece
of an array its place in the array (``box``: ``[start, stop)`` per
dimension), where it is stored (``file``, ``offset``, ``length``), its
logical ``size``, its ``crc32c`` and its ``encoding`` (False: as is, True:
one zstd frame, or the byte-grouping ``[start, length, width, frame]``).
A piece stored as is and larger than one block also has ``block`` and
``block_crc32c`` (one CRC32C per ``block`` bytes), so that a restore
reading part of it checks every byte it reads. A byte-grouped piece of
more than one frame has them too (``block`` is its frame size, one CRC32C
per frame's logical bytes) and ``block_stored``, each frame's stored
length: the frames lie back to back from ``offset`` and each decodes
alone, so a restore reads only the frames covering the part it needs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import jax

FORMAT = "s3dlio-orbax"
VERSION = 1
INDEX = "s3dlio_index.json"
PROCESS_INDEX = re.compile(r"index\.p(\d{5})\.json")
# Bytes per CRC32C of a piece stored as is: the unit a partial read of it
# is rounded out to (more overread per run, vs a longer index).
CRC_BLOCK = 256 << 10

Box = list[list[int]]


def data_name(process: int, n: int) -> str:
    return f"d.p{process:05d}.{n:03d}.bin"


def process_index_name(process: int) -> str:
    return f"index.p{process:05d}.json"


def child(base: str, name: str) -> str:
    return f"{base.rstrip('/')}/{name}"


def encode_path(keypath: tuple[Any, ...]) -> list[list[Any]]:
    """A jax key path as JSON: ``[kind, key]`` per level."""
    out: list[list[Any]] = []
    for k in keypath:
        if isinstance(k, jax.tree_util.DictKey):
            key = k.key
            if not isinstance(key, (str, int)):
                raise TypeError(
                    f"{jax.tree_util.keystr(keypath)}: dict key {key!r} is not a str or int"
                )
            out.append(["dict", key])
        elif isinstance(k, jax.tree_util.SequenceKey):
            out.append(["seq", k.idx])
        elif isinstance(k, jax.tree_util.GetAttrKey):
            out.append(["attr", k.name])
        elif isinstance(k, jax.tree_util.FlattenedIndexKey):
            out.append(["flat", k.key])
        else:
            raise TypeError(f"{jax.tree_util.keystr(keypath)}: unsupported tree key {k!r}")
    return out


def nest(leaves: list[tuple[list[list[Any]], Any]]) -> Any:
    """Nested dicts and lists from ``(encoded path, value)`` pairs (the
    tree when no target structure is given)."""
    root: dict[Any, Any] = {}
    for path, value in leaves:
        if not path:
            return value
        node = root
        for level, (_, key) in enumerate(path):
            if level == len(path) - 1:
                node[key] = value
            else:
                node = node.setdefault(key, {})
    return _lists(root, [p for p, _ in leaves])


def _lists(node: Any, paths: list[list[list[Any]]], depth: int = 0) -> Any:
    """Turn the dict levels that were sequences back into lists."""
    if not isinstance(node, dict):
        return node
    kinds = {p[depth][0] for p in paths if len(p) > depth}
    out = {
        k: _lists(v, [p for p in paths if len(p) > depth and p[depth][1] == k], depth + 1)
        for k, v in node.items()
    }
    if kinds == {"seq"}:
        return [out[i] for i in sorted(out)]
    return out


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def loads(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise ValueError(f"{where}: not an s3dlio_jax index ({e})") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{where}: not an s3dlio_jax index")
    if doc.get("version") != VERSION:
        raise ValueError(
            f"{where}: index version {doc.get('version')!r}, this s3dlio_jax reads {VERSION}"
        )
    return doc


def volume(box: Box) -> int:
    n = 1
    for start, stop in box:
        n *= stop - start
    return n


def intersect(a: Box, b: Box) -> Box | None:
    out = []
    for (a0, a1), (b0, b1) in zip(a, b, strict=True):
        lo, hi = max(a0, b0), min(a1, b1)
        if lo >= hi:
            return None
        out.append([lo, hi])
    return out
