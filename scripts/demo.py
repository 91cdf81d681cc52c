"""The main job, end to end: an editor hands a TODO to a background agent and takes the result.

Makes a sample repository with uncommitted work, starts ``handoff-lsp`` on stdio and drives it
the way an editor does: open a file (with unsaved changes), ask for code actions on a TODO,
delegate, keep typing while the agent works, watch ``handoff/sessions`` and the diagnostics,
apply the returned ``WorkspaceEdit`` to the buffer. Prints what an editor would show: the status
bar, progress, diagnostics, the session's worktree, and at the end the buffer against the
committed file, where the unsaved docstring and the edit typed meanwhile survive next to the
agent's change. Everything lives in one temporary folder (the sample repository, Handoff's state
folder, its runtime folder), removed at exit.

With ``HANDOFF_MODEL`` set the built-in agent uses that model. Without it, the model is an
offline scripted server on 127.0.0.1 that replays a fixed script: it is not an AI, and its
summary says so.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Union

from handoff.offline_model import ScriptedModel
from handoff.server.edits import apply_text_edits  # as a client applies them (UTF-16 columns)
from handoff.text import split_lines
from lsprotocol import types
from pygls.lsp.client import LanguageClient

QUIET_S = 2.0  # longest the demo stays silent while it waits

CART_COMMITTED = textwrap.dedent('''\
    """A tiny shopping cart."""


    def total(prices: list[float]) -> float:
        # TODO: return 0.0 for an empty cart instead of failing
        return sum(prices) / len(prices) * len(prices)


    def count(prices: list[float]) -> int:
        return len(prices)
    ''')

# What the developer has in the editor and has not saved: a docstring on count().
CART_UNSAVED = CART_COMMITTED.replace(
    "def count(prices: list[float]) -> int:\n",
    'def count(prices: list[float]) -> int:\n    """How many items are in the cart."""\n',
)

OFFLINE_SUMMARY = (
    "Offline scripted model (no AI, no network): replayed a fixed script that makes total() "
    "return 0.0 for an empty cart. Set HANDOFF_MODEL to use a real model."
)


def offline_script() -> list[dict[str, Any]]:
    return [
        {"tool_calls": [{"name": "read_file", "arguments": {"path": "shop/cart.py"}}]},
        {
            "tool_calls": [
                {
                    "name": "edit_file",
                    "arguments": {
                        "path": "shop/cart.py",
                        "oldText": "    # TODO: return 0.0 for an empty cart instead of failing\n"
                        "    return sum(prices) / len(prices) * len(prices)\n",
                        "newText": "    if not prices:\n        return 0.0\n    return sum(prices)\n",
                    },
                }
            ]
        },
        {"tool_calls": [{"name": "finish", "arguments": {"summary": OFFLINE_SUMMARY}}]},
    ]


def plain(obj: Any) -> Any:
    """Results and notification params as plain JSON values (pygls gives named tuples)."""
    if hasattr(obj, "_asdict"):
        return {k: plain(v) for k, v in obj._asdict().items()}
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def make_repo(root: Path) -> Path:
    repo = root / "sample"
    (repo / "shop").mkdir(parents=True)
    (repo / "shop" / "cart.py").write_text(CART_COMMITTED)
    (repo / "README.md").write_text("# sample shop\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(
        repo,
        "-c",
        "user.name=Dev",
        "-c",
        "user.email=dev@example.invalid",
        "commit",
        "-q",
        "-m",
        "initial",
    )
    # uncommitted work on disk, which the agent's snapshot includes
    (repo / "README.md").write_text("# sample shop\n\nWork in progress: pricing rules.\n")
    return repo


class Editor(LanguageClient):
    """Just enough of an editor: one buffer, a status bar, a diagnostics list."""

    def __init__(self) -> None:
        super().__init__("demo-editor", "1.0")
        conv = self.protocol._converter

        def code_action_or_command(obj: Any, _: type) -> Any:
            # lsprotocol 2025.0.0 reads anything with a "command" key as a Command
            kind = types.Command if isinstance(obj.get("command"), str) else types.CodeAction
            return conv.structure(obj, kind)

        # a runtime key, spelled as lsprotocol's annotations are (typing.Union), not a type hint
        conv.register_structure_hook(Union[types.Command, types.CodeAction], code_action_or_command)  # noqa: UP007
        self.text = ""
        self.version = 1
        self.sessions: list[dict[str, Any]] = []
        self.status_seen: list[str] = []
        self.changed = asyncio.Event()


_last_said = time.monotonic()


def say(who: str, message: str) -> None:
    global _last_said
    _last_said = time.monotonic()
    print(f"{who:>12} | {message}", flush=True)


class Waiting:
    """What the demo waits for, said whenever it has been silent for QUIET_S seconds: in full
    the first time, then as a short "still waiting" line with the time so far."""

    def __init__(self, what: str, why: str = "") -> None:
        self.set(what, why)

    def set(self, what: str, why: str = "") -> None:
        self.what, self.why, self.since, self.told = what, why, time.monotonic(), False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(max(0.05, QUIET_S - (time.monotonic() - _last_said)))
            if time.monotonic() - _last_said < QUIET_S - 0.05:
                continue
            elapsed = f"{time.monotonic() - self.since:.0f} s"
            if self.told or not self.why:
                say("demo", f"... still waiting for {self.what} ({elapsed})")
            else:
                say("demo", f"waiting for {self.what}: {self.why} ({elapsed})")
            self.told = True


def handoff_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "handoff.agent.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def stop_daemon(env: dict[str, str]) -> None:
    """End the session daemon the demo's server started, where there is one (``handoff daemon``
    owns the sessions from the daemon issue on; before it, the server itself did)."""
    if handoff_cli("daemon", "--help", env=env).returncode != 0:
        return
    stopped = handoff_cli("daemon", "stop", env=env)
    if stopped.returncode != 0:
        say("demo", f"handoff daemon stop: {(stopped.stderr or stopped.stdout).strip()}")


def surviving(final: str, offline: bool) -> list[tuple[str, str]]:
    """What the buffer should hold after the apply: (who, line) for each edit that must survive
    (the agent's own line only when it is the offline script's, which is known)."""
    found = []
    expected = [
        ("unsaved", '    """How many items are in the cart."""'),
        ("typed", '"""A tiny shopping cart, in euros."""'),
    ]
    if offline:
        expected.append(("agent", "        return 0.0"))
    for who, line in expected:
        found.append((who if line in final.splitlines() else f"LOST: {who}", line.strip()))
    return found


def status_line(sessions: list[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for s in sessions:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    return "Handoff: " + (", ".join(f"{n} {state}" for state, n in counts.items()) or "idle")


async def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="handoff-demo-"))
    runtime = tmp / "run"
    runtime.mkdir(mode=0o700)
    # Handoff's state (sessions, worktrees) and its runtime folder (the session daemon's socket)
    # are the demo's own, so it never meets the developer's sessions or daemon.
    env = {**os.environ, "HANDOFF_STATE_DIR": str(tmp / "state"), "XDG_RUNTIME_DIR": str(runtime)}
    try:
        return await demo(tmp, env)
    finally:
        stop_daemon(env)
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp.exists():
            say("demo", f"could not remove {tmp}")
        else:
            say("demo", f"removed {tmp}")


async def demo(tmp: Path, env: dict[str, str]) -> int:
    model = os.environ.get("HANDOFF_MODEL")
    scripted = None
    repo = make_repo(tmp)
    if not model:
        scripted = ScriptedModel(offline_script()).start()
        env.update(
            HANDOFF_MODEL="openai/offline-scripted-model",
            HANDOFF_API_BASE=scripted.url,
            HANDOFF_API_KEY="offline",
        )
        say("demo", f"no HANDOFF_MODEL set: using the offline scripted model at {scripted.url}")
    else:
        say("demo", f"model: {model}")
    say("demo", f"sample repository: {repo} (README.md has uncommitted changes)")

    editor = Editor()
    uri = (repo / "shop" / "cart.py").as_uri()

    @editor.feature("handoff/sessions")
    def on_sessions(ls: Editor, params: Any) -> None:
        sessions = plain(params)["sessions"]
        ls.sessions = sessions
        line = status_line(sessions)
        if not ls.status_seen or ls.status_seen[-1] != line:
            ls.status_seen.append(line)
            say("status bar", line)
        ls.changed.set()

    @editor.feature(types.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def on_diagnostics(ls: Editor, params: types.PublishDiagnosticsParams) -> None:
        for d in params.diagnostics:
            if d.source == "handoff":
                say("diagnostic", f"line {d.range.start.line + 1}: {d.message.splitlines()[0]}")

    @editor.feature(types.WINDOW_WORK_DONE_PROGRESS_CREATE)
    def on_progress_create(ls: Editor, params: types.WorkDoneProgressCreateParams) -> None:
        return None

    @editor.feature(types.PROGRESS)
    def on_progress(ls: Editor, params: Any) -> None:
        value = params.get("value") if isinstance(params, dict) else getattr(params, "value", None)
        if value is not None and not isinstance(value, dict):
            value = ls.protocol._converter.unstructure(value)
        value = plain(value) or {}
        text = value.get("message") or value.get("title")
        if text:
            say("progress", f"{value.get('kind', '')}: {text}")

    @editor.feature(types.WINDOW_SHOW_MESSAGE)
    def on_message(ls: Editor, params: types.ShowMessageParams) -> None:
        say("message", params.message)

    @editor.feature(types.WORKSPACE_APPLY_EDIT)
    def on_apply(ls: Editor, params: types.ApplyWorkspaceEditParams):
        edits: list[types.TextEdit] = []
        for change in params.edit.document_changes or []:
            if isinstance(change, types.TextDocumentEdit) and change.text_document.uri == uri:
                if change.text_document.version not in (None, ls.version):
                    return types.ApplyWorkspaceEditResult(
                        applied=False, failure_reason="buffer moved"
                    )
                edits.extend(e for e in change.edits if isinstance(e, types.TextEdit))
        for u, file_edits in (params.edit.changes or {}).items():
            if u == uri:
                edits.extend(file_edits)
        say("editor", f"workspace/applyEdit: {len(edits)} edit(s) to shop/cart.py")
        ls.text = apply_text_edits(ls.text, edits)
        ls.version += 1
        return types.ApplyWorkspaceEditResult(applied=True)

    server = [sys.executable, "-m", "handoff.server"]
    waiting = Waiting("handoff-lsp to start and answer initialize")
    ticker = asyncio.create_task(waiting.run())
    await editor.start_io(*server, env=env, cwd=repo)
    try:
        await editor.initialize_async(
            types.InitializeParams(
                process_id=os.getpid(),
                root_uri=repo.as_uri(),
                workspace_folders=[types.WorkspaceFolder(uri=repo.as_uri(), name="sample")],
                capabilities=types.ClientCapabilities(
                    window=types.WindowClientCapabilities(work_done_progress=True),
                    workspace=types.WorkspaceClientCapabilities(
                        apply_edit=True,
                        workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=True),
                    ),
                    text_document=types.TextDocumentClientCapabilities(
                        code_action=types.CodeActionClientCapabilities(
                            code_action_literal_support=types.ClientCodeActionLiteralOptions(
                                code_action_kind=types.ClientCodeActionKindOptions(
                                    value_set=[
                                        types.CodeActionKind.QuickFix,
                                        types.CodeActionKind.RefactorRewrite,
                                        "source",
                                    ]
                                )
                            )
                        ),
                        publish_diagnostics=types.PublishDiagnosticsClientCapabilities(),
                    ),
                ),
            )
        )
        editor.initialized(types.InitializedParams())
        editor.text = CART_UNSAVED
        editor.text_document_did_open(
            types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(
                    uri=uri, language_id="python", version=1, text=editor.text
                )
            )
        )
        say("editor", "opened shop/cart.py with an unsaved docstring on count()")
        todo_line = split_lines(editor.text).index(
            "    # TODO: return 0.0 for an empty cart instead of failing"
        )
        pos = types.Position(line=todo_line, character=6)
        actions = await editor.text_document_code_action_async(
            types.CodeActionParams(
                text_document=types.TextDocumentIdentifier(uri=uri),
                range=types.Range(start=pos, end=pos),
                context=types.CodeActionContext(diagnostics=[]),
            )
        )
        titles = [a.title for a in actions or []]
        say("code action", " | ".join(titles) or "(none)")
        action = next(a for a in actions or [] if "TODO" in a.title)
        command = action.command if isinstance(action, types.CodeAction) else action
        say("editor", f"picked: {action.title}")
        result = await editor.workspace_execute_command_async(
            types.ExecuteCommandParams(command=command.command, arguments=command.arguments)
        )
        sid = plain(result)["sessionId"]
        say("editor", f"session {sid} started; the developer keeps typing")
        waiting.set(
            "the agent",
            "its first run starts the agent host, which loads litellm "
            "(seconds), then the model's replies come as progress",
        )

        # The developer edits the same file while the agent works (line 1, far from the TODO).
        editor.version += 1
        editor.text = editor.text.replace(
            '"""A tiny shopping cart."""', '"""A tiny shopping cart, in euros."""'
        )
        editor.text_document_did_change(
            types.DidChangeTextDocumentParams(
                text_document=types.VersionedTextDocumentIdentifier(
                    uri=uri, version=editor.version
                ),
                content_changes=[types.TextDocumentContentChangeWholeDocument(text=editor.text)],
            )
        )
        say("editor", 'typed on line 1 meanwhile: """A tiny shopping cart, in euros."""')

        async def wait_state(states: set[str], timeout: float = 300) -> dict[str, Any]:
            async def until() -> dict[str, Any]:
                while True:
                    for s in editor.sessions:
                        if s["id"] == sid and s["state"] in states:
                            return s
                    editor.changed.clear()
                    await editor.changed.wait()

            return await asyncio.wait_for(until(), timeout)

        session = await wait_state({"running", "ready", "failed"})
        worktree = Path(session.get("worktree") or "(not in the session list)")
        branch = session.get("branch") or f"handoff/{sid}"
        say(
            "worktree",
            f"the agent works in {worktree} (branch {branch}), a git worktree of "
            "the snapshot, outside the sample repository",
        )
        session = await wait_state({"ready", "failed"})
        if session["state"] == "failed":
            say("demo", f"the session failed: {session.get('error')}")
            return 1
        say("session", f"ready: {session['summary']}")
        disk = (repo / "shop" / "cart.py").read_text()
        say(
            "worktree",
            f"the result is committed on {branch}; shop/cart.py on disk is "
            + ("untouched until the apply" if disk == CART_COMMITTED else "CHANGED"),
        )
        waiting.set("the three-way merge and the edit")
        res = await editor.workspace_execute_command_async(
            types.ExecuteCommandParams(command="handoff.apply", arguments=[{"sessionId": sid}])
        )
        applied = plain(res)["applied"]
        session = await wait_state({"applied", "ready"})
        say("session", f"apply -> applied={applied}, state {session['state']}")
        say(
            "worktree",
            f"{worktree} "
            + (
                "is still there"
                if worktree.exists()
                else "was removed with its branch, now that it is applied"
            ),
        )
        print()
        print("The buffer after the apply, against the committed file: the agent's change, the")
        print("developer's unsaved docstring and the edit typed while the agent ran, all three:")
        print()
        sys.stdout.writelines(
            difflib.unified_diff(
                CART_COMMITTED.splitlines(keepends=True),
                editor.text.splitlines(keepends=True),
                "shop/cart.py (committed)",
                "shop/cart.py (the buffer after apply)",
            )
        )
        print()
        kept = surviving(editor.text, offline=scripted is not None)
        labels = {
            "unsaved": "the unsaved docstring",
            "typed": "the edit typed meanwhile",
            "agent": "the agent's change",
        }
        for who, line in kept:
            say(
                "kept" if not who.startswith("LOST") else "lost",
                f"{labels.get(who.removeprefix('LOST: '))}: {line}",
            )
        ok = bool(applied) and not any(who.startswith("LOST") for who, _ in kept)
        say("demo", "done: the result came back as an edit" if ok else "the result did not apply")
        return 0 if ok else 1
    finally:
        waiting.set("handoff-lsp to shut down")
        try:
            await asyncio.wait_for(editor.shutdown_async(None), 10)
            editor.exit(None)
        except Exception as exc:  # the demo's verdict is already printed
            say("demo", f"shutdown: {exc}")
        await editor.stop()
        ticker.cancel()
        if scripted:
            scripted.stop()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
