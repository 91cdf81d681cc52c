"""A session's merged result as one LSP ``WorkspaceEdit`` (pure functions).

Input: the merge plan (``FileMerge`` per changed file, content relative to the files as they are
now) and the open documents (text and version). Output: versioned ``documentChanges`` with minimal
line-level ``TextEdit``s, resource operations for created / deleted / renamed files when the client
supports them, and change annotations that ask for confirmation when the client supports those.
What the client cannot express (a file creation without resource operations, binary content) is
returned as :class:`DiskWrite`s for the server to do itself after the client applied the rest.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Mapping
from pathlib import Path

from handoff import files, linediff
from handoff.agent.protocol import Planned as FileMerge  # one file of the daemon's merge plan
from handoff.text import body, split_keepends, units
from handoff.uris import doc_uri
from lsprotocol import types


@dataclasses.dataclass(frozen=True)
class EditCaps:
    """What the client's ``workspace.workspaceEdit`` capabilities allow."""

    document_changes: bool = False
    resource_operations: frozenset[str] = frozenset()
    change_annotations: bool = False
    encoding: str = "utf-16"  # the negotiated position encoding

    @classmethod
    def from_client(cls, caps: types.ClientCapabilities | None, encoding: str) -> EditCaps:
        ws = getattr(getattr(caps, "workspace", None), "workspace_edit", None)
        ops = frozenset(
            str(getattr(o, "value", o)) for o in (getattr(ws, "resource_operations", None) or [])
        )
        # Resource operations exist only inside documentChanges: a client that lists them takes
        # documentChanges (Neovim does, without saying documentChanges = true).
        doc_changes = bool(getattr(ws, "document_changes", False)) or bool(ops)
        annotations = getattr(ws, "change_annotation_support", None) is not None
        return cls(
            doc_changes,
            ops if doc_changes else frozenset(),
            annotations and doc_changes,
            str(getattr(encoding, "value", encoding)),
        )


@dataclasses.dataclass(frozen=True)
class OpenDoc:
    uri: str  # as the client names it
    text: str
    version: int | None


@dataclasses.dataclass(frozen=True)
class DiskWrite:
    """A change the client cannot make: ``content`` None deletes ``path``; ``old_path`` renames;
    ``mode`` is the git mode the file gets (``120000``: a symbolic link to ``content``); with
    ``only_mode`` just the executable bit is set, beside the client's text edit."""

    path: Path
    content: bytes | None
    old_path: Path | None = None
    mode: str | None = None
    only_mode: bool = False


@dataclasses.dataclass
class BuiltEdit:
    edit: types.WorkspaceEdit
    disk: list[DiskWrite]
    files: list[str]  # uris that change, for messages

    @property
    def empty(self) -> bool:
        return not self.files and not self.disk


def line_position(lines: list[str], index: int, encoding: str) -> types.Position:
    """The position at the start of line ``index``; past an unterminated last line, its end."""
    if index < len(lines) or not lines:
        return types.Position(line=index, character=0)
    last = lines[-1]
    if body(last) != last:  # the text ends with a line end: the next line exists and is empty
        return types.Position(line=len(lines), character=0)
    return types.Position(line=len(lines) - 1, character=units(last, encoding))


def text_edits(old: str, new: str, encoding: str = "utf-16") -> list[types.TextEdit]:
    """Minimal line-level edits turning ``old`` into ``new`` (non-overlapping, in order)."""
    a, b = split_keepends(old), split_keepends(new)
    edits: list[types.TextEdit] = []
    for tag, i1, i2, j1, j2 in linediff.opcodes(a, b):  # not quadratic in repeated lines
        if tag == "equal":
            continue
        edits.append(
            types.TextEdit(
                range=types.Range(
                    start=line_position(a, i1, encoding), end=line_position(a, i2, encoding)
                ),
                new_text="".join(b[j1:j2]),
            )
        )
    return edits


def apply_text_edits(text: str, edits: list[types.TextEdit], encoding: str = "utf-16") -> str:
    """Apply ``edits`` to ``text`` as a client does (used by tests and previews)."""
    lines = split_keepends(text)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(pos: types.Position) -> int:
        if pos.line >= len(lines):
            return len(text)
        line = body(lines[pos.line])
        col, used = 0, 0
        while col < len(line) and used < pos.character:
            used += units(line[col], encoding)
            col += 1
        return starts[pos.line] + col

    spans = sorted(
        ((offset(e.range.start), offset(e.range.end), e.new_text) for e in edits),
        key=lambda s: (s[0], s[1]),
    )
    out, at = [], 0
    for start, end, new_text in spans:
        if start < at:
            raise ValueError("overlapping edits")
        out += [text[at:start], new_text]
        at = end
    out.append(text[at:])
    return "".join(out)


def _decode(data: bytes | None) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def build(
    plans: list[FileMerge],
    repo_root: Path,
    docs: Mapping[str, OpenDoc],
    current: Mapping[str, bytes | None],
    caps: EditCaps,
    *,
    label: str = "Handoff",
    annotation_id: str = "handoff",
    conflict_markers: bool = False,
) -> BuiltEdit:
    """The WorkspaceEdit for ``plans``.

    ``docs`` maps repository-relative paths of open documents to their uri, text and version;
    ``current`` maps paths to the content the plan was merged against (buffer or disk). Conflicts are
    left out unless ``conflict_markers`` (their content then carries the markers).
    """
    changes: list = []
    flat: dict[str, list[types.TextEdit]] = {}
    disk: list[DiskWrite] = []
    files_changed: list[str] = []
    ann = annotation_id if caps.change_annotations else None

    def uri_of(path: str) -> str:
        return doc_uri(docs, repo_root, path)

    def add_text(path: str, old: str, new: str) -> None:
        uri = uri_of(path)
        plain = text_edits(old, new, caps.encoding)
        edits: list[types.TextEdit | types.AnnotatedTextEdit] = [*plain]
        if not edits:
            return
        files_changed.append(uri)
        if ann:
            edits = [
                types.AnnotatedTextEdit(annotation_id=ann, range=e.range, new_text=e.new_text)
                for e in edits
            ]
        if caps.document_changes:
            version = docs[path].version if path in docs else None
            changes.append(
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(
                        uri=uri, version=version
                    ),
                    edits=edits,
                )
            )
        else:
            flat.setdefault(uri, []).extend(plain)  # no annotations without documentChanges

    def old_text(path: str) -> str | None:
        if path in docs:
            return docs[path].text
        return _decode(current.get(path))

    for fm in plans:
        action = fm.action
        if action == "unchanged":
            continue
        if action == "conflict":
            if not conflict_markers or fm.content is None:
                continue
            action = "write" if old_text(fm.old_path or fm.path) is not None else "create"
        uri = uri_of(fm.path)
        new = _decode(fm.content)
        if fm.link or (action == "create" and fm.mode == files.EXECUTABLE):
            # a symbolic link (made, changed or replaced) or a new executable: the server writes
            # it as such; an editor would write a link's target as text, and make files 0644
            for p in {fm.path, fm.old_path or fm.path}:
                if p in docs and fm.link:
                    raise ValueError(
                        f"{p} is open in the editor and the agent made it (or "
                        "replaced) a symbolic link; close it or apply from the "
                        "terminal (`handoff apply`)"
                    )
            moved_from = repo_root / fm.old_path if action == "rename" and fm.old_path else None
            disk.append(
                DiskWrite(
                    repo_root / fm.path,
                    None if action == "delete" else fm.content,
                    moved_from,
                    fm.mode,
                )
            )
            files_changed.append(uri)
            continue
        chmod = fm.mode is not None and fm.mode != fm.current_mode and action in ("write", "rename")
        if action == "write":
            old = old_text(fm.path)
            if new is None or old is None:  # binary: the server writes it
                if fm.path in docs:
                    raise ValueError(
                        f"{fm.path} is open in the editor and its new content is not text"
                    )
                disk.append(DiskWrite(repo_root / fm.path, fm.content, mode=fm.mode))
                files_changed.append(uri)
            else:
                add_text(fm.path, old, new)
                if chmod:  # the text through the editor, the executable bit by the server
                    disk.append(DiskWrite(repo_root / fm.path, None, mode=fm.mode, only_mode=True))
                    files_changed.append(uri)
        elif action == "create":
            if "create" in caps.resource_operations and new is not None:
                changes.append(
                    types.CreateFile(
                        uri=uri,
                        options=types.CreateFileOptions(overwrite=False, ignore_if_exists=False),
                        annotation_id=ann,
                    )
                )
                files_changed.append(uri)
                if new:
                    changes.append(
                        types.TextDocumentEdit(
                            text_document=types.OptionalVersionedTextDocumentIdentifier(
                                uri=uri, version=None
                            ),
                            edits=[_insert_all(new, ann)],
                        )
                    )
            else:
                disk.append(DiskWrite(repo_root / fm.path, fm.content, mode=fm.mode))
                files_changed.append(uri)
        elif action == "delete":
            if "delete" in caps.resource_operations:
                changes.append(types.DeleteFile(uri=uri, annotation_id=ann))
            else:
                disk.append(DiskWrite(repo_root / fm.path, None))
            files_changed.append(uri)
        elif action == "rename":
            old_path = fm.old_path or fm.path
            old_uri = uri_of(old_path)
            old = old_text(old_path)
            if "rename" in caps.resource_operations and new is not None and old is not None:
                # Edit the file where it is now, then move it: the versioned identifier names an
                # open buffer the client knows.
                add_text(old_path, old, new)
                changes.append(
                    types.RenameFile(
                        old_uri=old_uri,
                        new_uri=uri,
                        options=types.RenameFileOptions(overwrite=False, ignore_if_exists=False),
                        annotation_id=ann,
                    )
                )
                files_changed.append(uri)
                if chmod:
                    disk.append(DiskWrite(repo_root / fm.path, None, mode=fm.mode, only_mode=True))
            else:
                if old_path in docs:
                    raise ValueError(
                        f"the client cannot rename {old_path} while it is open; "
                        "close it or apply from the terminal (`handoff apply`)"
                    )
                disk.append(
                    DiskWrite(repo_root / fm.path, fm.content, repo_root / old_path, fm.mode)
                )
                files_changed.append(uri)
    edit = types.WorkspaceEdit()
    if caps.document_changes:
        edit.document_changes = changes
        if ann:
            edit.change_annotations = {
                ann: types.ChangeAnnotation(
                    label=label,
                    needs_confirmation=True,
                    description="Changes made by a background agent (Handoff)",
                )
            }
    else:
        edit.changes = flat
    return BuiltEdit(edit, disk, list(dict.fromkeys(files_changed)))


def _insert_all(text: str, ann: str | None) -> types.TextEdit | types.AnnotatedTextEdit:
    rng = types.Range(
        start=types.Position(line=0, character=0), end=types.Position(line=0, character=0)
    )
    if ann:
        return types.AnnotatedTextEdit(annotation_id=ann, range=rng, new_text=text)
    return types.TextEdit(range=rng, new_text=text)


_SPLITLINES_EXTRA = "\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # breaks to str.splitlines, not to LSP
_CHUNK = 1 << 16


def _line_offset(text: str, line: int) -> int:
    """Where line ``line`` of ``text`` (lines end in ``\\n``) starts; the end past the last."""
    if line <= 0:
        return 0
    pos, seen = 0, 0
    while pos < len(text):  # whole chunks counted in C, then the one holding the line
        end = min(len(text), pos + _CHUNK)
        n = text.count("\n", pos, end)
        if seen + n >= line:
            break
        seen, pos = seen + n, end
    else:
        return len(text)
    while seen < line:
        pos = text.index("\n", pos) + 1
        seen += 1
    return pos


def incremental(text: str, change: types.TextDocumentContentChangePartial, codec) -> str | None:
    """``text`` with the incremental ``change`` applied, without splitting the whole document
    into lines (pygls' own way costs ~0.1 s a keystroke in a 10 MB file); None for a text whose
    line breaks are not plain ``\\n`` / ``\\r\\n`` (lone ``\\r``, or what ``str.splitlines``
    also counts, where pygls counts lines its own way: it applies those)."""
    if "\r" in text and text.count("\r") != text.count("\r\n"):
        return None
    if any(c in text or c in change.text for c in _SPLITLINES_EXTRA):  # each a fast search
        return None

    def offset(pos: types.Position) -> int:
        start = _line_offset(text, pos.line)
        stop = text.find("\n", start)
        stop = len(text) if stop < 0 else stop
        line = text[start:stop].removesuffix("\r")
        if line.isascii() or codec is None:
            column = pos.character
        else:
            column = codec.position_from_client_units(
                [line], types.Position(line=0, character=pos.character)
            ).character
        return start + min(column, len(line))

    rng = change.range
    a, b = offset(rng.start), offset(rng.end)
    return text[:a] + change.text + text[max(a, b) :]


class Lines:
    """A text's lines (each with its break) as ``handoff.text.split_keepends`` gives them,
    without splitting the text: one line costs a count in C (a 10 MB document's split costs
    ~0.1 s, done on every change for the diagnostics' ranges). A text with a lone ``\r`` is
    split as before."""

    def __init__(self, text: str) -> None:
        self._text = text
        plain = text.count("\r") == text.count("\r\n")
        self._split = None if plain else split_keepends(text)
        self._len: int | None = None
        self._counts: list[int] | None = None

    def __len__(self) -> int:
        if self._split is not None:
            return len(self._split)
        if self._len is None:
            t = self._text
            self._len = t.count("\n") + (1 if t and not t.endswith("\n") else 0)
        return self._len

    def __getitem__(self, i: int) -> str:
        if self._split is not None:
            return self._split[i]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = self._offset(i)
        stop = self._text.find("\n", start)
        return self._text[start : len(self._text) if stop < 0 else stop + 1]

    def _offset(self, line: int) -> int:
        """Where ``line`` starts: the chunk holding it from a running count made once (one
        pass over the text for any number of lookups), then the lines within that chunk."""
        if self._counts is None:
            t, total, counts = self._text, 0, []
            for pos in range(0, len(t), _CHUNK):
                total += t.count("\n", pos, pos + _CHUNK)
                counts.append(total)  # breaks before the end of chunk k
            self._counts = counts
        k = bisect.bisect_left(self._counts, line)  # the chunk whose end passes `line` breaks
        pos, seen = k * _CHUNK, self._counts[k - 1] if k else 0
        while seen < line:
            pos = self._text.index("\n", pos) + 1
            seen += 1
        return pos
