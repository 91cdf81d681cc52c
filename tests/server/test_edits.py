"""From a merge plan to a WorkspaceEdit (server/edits.py), checked by applying the edits."""

from __future__ import annotations

from pathlib import Path

import pytest
from handoff.agent.merge import ConflictRegion, FileMerge
from handoff.server.edits import EditCaps, OpenDoc, apply_text_edits, build, text_edits
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

ROOT = Path("/work/repo")
VSCODE = EditCaps(True, frozenset({"create", "rename", "delete"}), True, "utf-16")
NVIM = EditCaps(True, frozenset({"create", "rename", "delete"}), False, "utf-8")
PLAIN = EditCaps(False, frozenset(), False, "utf-16")


def uri(path: str) -> str:
    return (ROOT / path).as_uri()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-32"])
@pytest.mark.parametrize(
    "old, new",
    [
        ("a\nb\nc\n", "a\nB\nc\n"),
        ("a\nb\nc\n", "a\nc\n"),
        ("a\nb\nc\n", "x\na\nb\nc\nd\n"),
        ("a\nb", "a\nb\nc"),  # no final line end
        ("a\nb", "a\nb\n"),
        ("a\nb\n", "a\nb"),
        ("", "hello\n"),
        ("hello\n", ""),
        ("a\r\nb\r\n", "a\r\nB\r\n"),
        ("😀 x\nπ y", "😀 x\nπ z"),  # astral and BMP characters on the last line
        ("l1\rl2\rl3", "l1\rL2\rl3"),
    ],
)
def test_edits_reproduce_the_new_text(old, new, encoding):
    edits = text_edits(old, new, encoding)
    assert apply_text_edits(old, edits, encoding) == new


def test_edits_are_minimal_line_ranges():
    old = "".join(f"line {i}\n" for i in range(100))
    new = old.replace("line 50\n", "line fifty\n")
    [edit] = text_edits(old, new)
    assert (edit.range.start.line, edit.range.end.line) == (50, 51)
    assert edit.range.start.character == edit.range.end.character == 0
    assert edit.new_text == "line fifty\n"


def test_end_of_unterminated_last_line_counts_code_units():
    [edit] = text_edits("ok\n😀", "ok\n😀!", "utf-16")
    assert edit.range.end == types.Position(line=1, character=2)
    [edit] = text_edits("ok\n😀", "ok\n😀!", "utf-8")
    assert edit.range.end == types.Position(line=1, character=4)


lines = st.lists(st.sampled_from(["a", "b", "c", "😀", "π", ""]), max_size=8)
ends = st.sampled_from(["\n", "\r\n"])


@settings(max_examples=200, deadline=None)
@given(lines, lines, ends, st.booleans(), st.booleans(), st.sampled_from(["utf-8", "utf-16"]))
def test_any_change_round_trips(a, b, eol, a_end, b_end, encoding):
    old = eol.join(a) + (eol if a_end and a else "")
    new = eol.join(b) + (eol if b_end and b else "")
    assert apply_text_edits(old, text_edits(old, new, encoding), encoding) == new


def apply_workspace_edit(edit: types.WorkspaceEdit, files: dict[str, str], encoding: str) -> None:
    """A tiny client: apply ``edit`` to ``files`` (uri -> text)."""
    if edit.changes:
        for u, edits in edit.changes.items():
            files[u] = apply_text_edits(files[u], edits, encoding)
    for change in edit.document_changes or []:
        if isinstance(change, types.CreateFile):
            assert change.uri not in files
            files[change.uri] = ""
        elif isinstance(change, types.DeleteFile):
            del files[change.uri]
        elif isinstance(change, types.RenameFile):
            files[change.new_uri] = files.pop(change.old_uri)
        else:
            u = change.text_document.uri
            files[u] = apply_text_edits(files[u], change.edits, encoding)


def test_full_plan_with_resource_operations_and_versions():
    current = {"a.py": b"x = 1\ny = 2\n", "gone.py": b"bye\n", "old.py": b"keep\nme\n"}
    docs = {"a.py": OpenDoc(uri("a.py"), "x = 1\ny = 2\n", 7)}
    plans = [
        FileMerge("a.py", "write", b"x = 1\ny = 3\n", []),
        FileMerge("new.py", "create", b"print('hi')\n", []),
        FileMerge("gone.py", "delete", None, []),
        FileMerge("new_name.py", "rename", b"keep\nme too\n", [], old_path="old.py"),
        FileMerge("same.py", "unchanged", None, []),
        FileMerge("c.py", "conflict", b"<<<<<<<\n", [ConflictRegion(0, 1)], reason="x"),
    ]
    built = build(plans, ROOT, docs, current, VSCODE, label="Handoff: t", annotation_id="s1")
    edit = built.edit
    assert edit.changes is None
    [first, *_] = edit.document_changes
    assert first.text_document == types.OptionalVersionedTextDocumentIdentifier(
        uri=uri("a.py"), version=7
    )
    assert all(isinstance(e, types.AnnotatedTextEdit) for e in first.edits)
    assert edit.change_annotations["s1"].needs_confirmation is True
    assert built.disk == []
    files = {uri(p): c.decode() for p, c in current.items()}
    apply_workspace_edit(edit, files, "utf-16")
    assert files == {
        uri("a.py"): "x = 1\ny = 3\n",
        uri("new.py"): "print('hi')\n",
        uri("new_name.py"): "keep\nme too\n",
    }
    assert uri("c.py") not in built.files


def test_closed_file_has_null_version_and_plain_edits_without_annotations():
    current = {"a.py": b"1\n2\n"}
    built = build([FileMerge("a.py", "write", b"1\ntwo\n", [])], ROOT, {}, current, NVIM)
    [change] = built.edit.document_changes
    assert change.text_document.version is None
    assert all(type(e) is types.TextEdit for e in change.edits)
    assert built.edit.change_annotations is None


def test_client_without_document_changes_gets_changes_and_disk_writes():
    current = {"a.py": b"1\n"}
    plans = [
        FileMerge("a.py", "write", b"2\n", []),
        FileMerge("n.txt", "create", b"new\n", []),
        FileMerge("a.bin", "write", b"\xff\x00", []),
    ]
    built = build(plans, ROOT, {}, {**current, "a.bin": b"\x00"}, PLAIN)
    assert built.edit.document_changes is None
    files = {uri("a.py"): "1\n"}
    apply_workspace_edit(built.edit, files, "utf-16")
    assert files == {uri("a.py"): "2\n"}
    assert [(d.path.name, d.content) for d in built.disk] == [
        ("n.txt", b"new\n"),
        ("a.bin", b"\xff\x00"),
    ]


def test_conflict_markers_only_when_asked():
    current = {"a.py": b"mine\n"}
    plan = FileMerge(
        "a.py",
        "conflict",
        b"<<<<<<< current\nmine\n=======\ntheirs\n>>>>>>> agent\n",
        [ConflictRegion(0, 1)],
    )
    assert build([plan], ROOT, {}, current, NVIM).empty
    built = build([plan], ROOT, {}, current, NVIM, conflict_markers=True)
    files = {uri("a.py"): "mine\n"}
    apply_workspace_edit(built.edit, files, "utf-8")
    assert files[uri("a.py")].startswith("<<<<<<< current\nmine\n")


def test_edits_are_against_the_open_buffer_not_the_disk():
    docs = {"a.py": OpenDoc(uri("a.py"), "buffer\nline\n", 3)}
    built = build(
        [FileMerge("a.py", "write", b"buffer\nLINE\n", [])],
        ROOT,
        docs,
        {"a.py": b"buffer\nline\n"},
        VSCODE,
    )
    files = {uri("a.py"): "buffer\nline\n"}
    apply_workspace_edit(built.edit, files, "utf-16")
    assert files[uri("a.py")] == "buffer\nLINE\n"


def test_caps_from_real_client_capability_sets():
    import pytest_lsp

    vscode = EditCaps.from_client(pytest_lsp.client_capabilities("visual_studio_code"), "utf-16")
    assert vscode.document_changes and vscode.change_annotations
    assert vscode.resource_operations == {"create", "rename", "delete"}
    nvim = EditCaps.from_client(pytest_lsp.client_capabilities("neovim"), "utf-8")
    assert nvim.document_changes and not nvim.change_annotations and nvim.encoding == "utf-8"
    assert EditCaps.from_client(types.ClientCapabilities(), "utf-16") == PLAIN
