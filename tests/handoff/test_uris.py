"""handoff.uris: file uris and paths, one way there and back."""

from __future__ import annotations

from pathlib import Path

from handoff import uris


def test_path_of_takes_local_file_uris_only():
    assert uris.path_of("file:///my%20dir/a.py") == Path("/my dir/a.py")
    assert uris.path_of("file://localhost/a.py") == Path("/a.py")
    for uri in ("untitled:1", "file://host/a.py", "file:///a%00b", "file:relative"):
        assert uris.path_of(uri) is None, uri


def test_normal_and_relative():
    assert uris.normal("file:///c%3A/x%2Dy.py") == Path("/c:/x-y.py").as_uri()
    assert uris.normal("untitled:1") == "untitled:1"
    assert uris.relative(uris.uri_of("/r/p/a.py"), "/r/p") == "a.py"
    assert uris.relative(uris.uri_of("/else/a.py"), "/r/p/") == "/else/a.py"
