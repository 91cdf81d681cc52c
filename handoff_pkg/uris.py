"""Uris and paths: the one place a ``file:`` uri becomes a path and back (both sides import it).

A session's ``uri`` and ``filesChanged`` are ``file:`` uris as :meth:`pathlib.Path.as_uri` writes
them; a client may spell the same file otherwise (``%3A`` for ``:``, lower-case escapes), so a
client's uri is compared after :func:`normal`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse


def path_of(uri: str) -> Path | None:
    """The local absolute path of a ``file:`` uri; None for anything else (untitled buffers,
    another host's file, a uri that decodes to a relative path or to one with a NUL byte)."""
    if not uri.startswith("file:"):
        return None
    parsed = urlparse(uri)
    if parsed.netloc not in ("", "localhost"):
        return None
    fs = unquote(parsed.path)
    if not fs or "\x00" in fs or not fs.startswith("/"):
        return None
    return Path(fs)


def uri_of(path: Path | str) -> str:
    """The ``file:`` uri of an absolute path, as sessions carry it."""
    return Path(path).as_uri()


def normal(uri: str) -> str:
    """``uri`` as :func:`uri_of` spells it (a ``file:`` uri of a local path), else unchanged."""
    path = path_of(uri)
    return uri_of(path) if path is not None else uri


def relative(uri: str, root: str | Path) -> str:
    """A file's uri as a path relative to ``root`` (for messages); the whole path when it is
    outside, the uri itself when it is not a local file."""
    path = path_of(uri)
    if path is None:
        return uri
    prefix = str(root).rstrip("/") + "/"
    text = str(path)
    return text[len(prefix) :] if text.startswith(prefix) else text


class _Named(Protocol):
    @property
    def uri(self) -> str: ...


def doc_uri(docs: Mapping[str, _Named], root: Path, rel: str) -> str:
    """The uri of the repository file ``rel``: as the client named it when it is open (in
    ``docs``, by repository-relative path), else ``uri_of(root / rel)``."""
    doc = docs.get(rel)
    return doc.uri if doc is not None else uri_of(root / rel)
