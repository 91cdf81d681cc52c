"""Configuration from the editor: ``initializationOptions`` and ``workspace/configuration``.

The merge of every source (defaults < ``.handoff.toml`` / ``[tool.handoff]`` < environment <
initialization options < ``workspace/configuration`` section ``handoff``) is agent.config.load's
job; this module gathers the editor's part, pulls it again when the configuration changes, and
shows what is wrong in one warning (each problem once per server life).
"""

from __future__ import annotations

import copy
import logging
import os
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException

from handoff.agent import config as config_mod

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
SECTION = "handoff"
INIT_SOURCE = "initializationOptions"
PULL_SOURCE = "workspace/configuration"
RACY_NS = 2_000_000_000  # more than any file system's timestamp granularity (FAT: 2 s)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, last change) of a regular file; None when there is none to read."""
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return st.st_ino, st.st_size, max(st.st_mtime_ns, st.st_ctime_ns)


def unwrap(options: Any) -> Any:
    """Accept ``{"handoff": {...}}`` as well as the configuration object itself; ``null`` and
    ``[]`` are "nothing" (Neovim encodes an empty Lua table as ``[]``)."""
    if isinstance(options, Mapping) and set(options) == {SECTION}:
        options = options[SECTION]
    if options is None or options == []:
        return None
    return options


class Settings:
    def __init__(self, ls: "HandoffServer") -> None:
        self.ls = ls
        self.init_options: Any = None
        self.pulled: dict[str, Any] = {}  # scope ("" = global, else a repo root uri) -> section
        self._shown: set[str] = set()
        self._batch: list[str] | None = None
        self._loaded: dict[Path, tuple[Any, config_mod.Config, list[str]]] = {}  # root -> (key, ...)

    # -- sources -----------------------------------------------------------------------------
    def overrides(self, root: Path | None) -> list[tuple[str, Any]]:
        scope = root.as_uri() if root is not None else ""
        pulled = self.pulled.get(scope, self.pulled.get(""))
        return [(INIT_SOURCE, unwrap(self.init_options)), (PULL_SOURCE, unwrap(pulled))]

    def load(self, root: Path | None) -> tuple[config_mod.Config, list[str]]:
        """The merged configuration of ``root`` (blocking: reads TOML; call in a thread).

        Kept per root and given again (a copy) while its files, the environment and the editor's
        settings are what they were: every delegation asks, and parsing TOML holds the GIL."""
        overrides = self.overrides(root)
        if root is None:
            return config_mod.load(None, overrides=overrides)
        now = time.time_ns()
        stamps = [_stamp(path) for path in config_mod.source_files(root)]  # before reading them
        key = (stamps, repr((config_mod.from_env(os.environ), overrides)))
        kept = self._loaded.get(root)
        if kept is not None and kept[0] == key:
            cfg, messages = kept[1], kept[2]
        else:
            cfg, messages = config_mod.load(root, overrides=overrides)
            # A file changed within the last RACY_NS may change again with the same stamp
            # (timestamps are coarse): keep only what no later edit can look the same as.
            if all(st is None or st[-1] < now - RACY_NS for st in stamps):
                self._loaded[root] = (key, cfg, messages)
            else:
                self._loaded.pop(root, None)
        return copy.deepcopy(cfg), list(messages)

    async def config_for(self, root: Path) -> config_mod.Config:
        cfg, messages = await anyio.to_thread.run_sync(self.load, root)
        self.report(messages)
        return cfg

    # -- pulling ---------------------------------------------------------------------------
    @property
    def can_pull(self) -> bool:
        return bool(get_capability(self.ls.client_capabilities, "workspace.configuration", False))

    async def pull(self, roots: list[Path], *, with_global: bool = True) -> None:
        """Ask the client for section ``handoff``: globally and for each repository."""
        if not self.can_pull:
            return
        scopes = ([""] if with_global else []) + [r.as_uri() for r in roots]
        items = [types.ConfigurationItem(section=SECTION, scope_uri=s or None) for s in scopes]
        try:
            values = await self.ls.workspace_configuration_async(types.ConfigurationParams(items=items))
        except JsonRpcException as exc:  # the client failed the request: keep what we had
            log.warning("workspace/configuration failed: %s", exc)
            return
        for scope, value in zip(scopes, values or []):
            self.pulled[scope] = value

    def pushed(self, settings: Any) -> None:
        """``workspace/didChangeConfiguration`` from a client that pushes its settings."""
        if isinstance(settings, Mapping) and SECTION in settings:
            self.pulled = {"": settings[SECTION]}

    async def refresh(self, pushed: Any = None) -> None:
        """Read every source again and give each repository's sessions the new configuration."""
        roots = self.ls.repos.roots()
        if self.can_pull:
            await self.pull(roots)
        else:
            self.pushed(pushed)
        cfg, messages = await anyio.to_thread.run_sync(self.load, None)
        self.report(messages)
        for root in roots:
            repo = self.ls.repos.get(root)
            if repo is not None:
                repo.manager.config = await self.config_for(root)

    async def register_for_changes(self) -> None:
        """Ask for ``workspace/didChangeConfiguration`` when the client wants it registered."""
        if not get_capability(self.ls.client_capabilities,
                              "workspace.did_change_configuration.dynamic_registration", False):
            return
        reg = types.Registration(
            id="handoff-configuration", method=types.WORKSPACE_DID_CHANGE_CONFIGURATION,
            register_options=types.DidChangeConfigurationRegistrationOptions(section=SECTION))
        try:
            await self.ls.client_register_capability_async(types.RegistrationParams(registrations=[reg]))
        except JsonRpcException as exc:
            log.info("client did not register didChangeConfiguration: %s", exc)

    # -- messages --------------------------------------------------------------------------
    def begin_batch(self) -> None:
        """Collect problems until :meth:`end_batch` (start-up reads several sources)."""
        self._batch = []

    def end_batch(self) -> None:
        batch, self._batch = self._batch or [], None
        self.report(batch)

    def report(self, messages: list[str]) -> None:
        """One warning with every problem not shown before; the defaults stand in for them."""
        if self._batch is not None:
            self._batch.extend(messages)
            return
        new = [m for m in dict.fromkeys(messages) if m not in self._shown]
        if not new:
            return
        self._shown.update(new)
        text = "Handoff configuration: " + "; ".join(new)
        log.warning("%s", text)
        self.ls.window_show_message(types.ShowMessageParams(type=types.MessageType.Warning, message=text))
