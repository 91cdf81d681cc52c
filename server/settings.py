"""Configuration from the editor: ``initializationOptions`` and ``workspace/configuration``.

The merge of every source (defaults < ``.handoff.toml`` / ``[tool.handoff]`` < environment <
initialization options < ``workspace/configuration`` section ``handoff``) is the daemon's job
(agent.config.load, there); this module gathers the editor's part, which travels with each request
that needs it (with this process's environment), pulls it again when the configuration changes,
and shows what is wrong in one warning (each problem once per server life).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handoff.agent import protocol
from handoff.agent.client import client_env
from lsprotocol import types
from pygls.capabilities import get_capability
from pygls.exceptions import JsonRpcException

if TYPE_CHECKING:
    from .server import HandoffServer

log = logging.getLogger(__name__)
SECTION = "handoff"
INIT_SOURCE = "initializationOptions"
PULL_SOURCE = "workspace/configuration"
TRUST_ACTION = "Trust this repository's Handoff settings"


def unwrap(options: Any) -> Any:
    """Accept ``{"handoff": {...}}`` as well as the configuration object itself; ``null`` and
    ``[]`` are "nothing" (Neovim encodes an empty Lua table as ``[]``)."""
    if isinstance(options, Mapping) and set(options) == {SECTION}:
        options = options[SECTION]
    if options is None or options == []:
        return None
    return options


class Settings:
    def __init__(self, ls: HandoffServer) -> None:
        self.ls = ls
        self.init_options: Any = None
        self.pulled: dict[str, Any] = {}  # scope ("" = global, else a repo root uri) -> section
        self._shown: set[str] = set()
        self._offered: set[Path] = set()  # roots whose trust was offered
        self._batch: list[str] | None = None

    # -- sources -----------------------------------------------------------------------------
    def overrides(self, root: Path | None) -> list[tuple[str, Any]]:
        scope = root.as_uri() if root is not None else ""
        pulled = self.pulled.get(scope, self.pulled.get(""))
        return [(INIT_SOURCE, unwrap(self.init_options)), (PULL_SOURCE, unwrap(pulled))]

    def request_params(self, root: Path | None) -> dict[str, Any]:
        """What a request to the daemon carries so it uses this editor's configuration."""
        return {
            "env": client_env(),
            "overrides": [[src, data] for src, data in self.overrides(root)],
        }

    async def config_for(self, root: Path | None) -> dict[str, Any]:
        """The effective configuration of ``root`` (the daemon's wire form: camelCase keys)."""
        result = await self.ls.repos.call(
            protocol.CONFIG,
            {"root": str(root) if root is not None else None, **self.request_params(root)},
        )
        self.report(result.get("messages") or [])
        return result["config"]

    def offer_trust(self, root: Path) -> None:
        """Ask once per root whether to trust its Handoff settings (what `handoff trust` does):
        when a delegation met them untrusted, not at start-up (a prompt nobody asked for)."""
        if root in self._offered:
            return
        self._offered.add(root)
        self.ls.spawn(self._ask_trust(root), f"trust {root}")

    async def _ask_trust(self, root: Path) -> None:
        try:
            choice = await self.ls.window_show_message_request_async(
                types.ShowMessageRequestParams(
                    type=types.MessageType.Warning,
                    message=(
                        f"Handoff: {root}'s own settings (.handoff.toml or [tool.handoff]) choose what "
                        "runs, and are ignored until you trust them as they are now."
                    ),
                    actions=[types.MessageActionItem(title=TRUST_ACTION)],
                )
            )
        except JsonRpcException as exc:
            log.info("window/showMessageRequest failed: %s", exc)
            return
        if choice is not None and choice.title == TRUST_ACTION:
            await trust(self.ls, root)

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
            values = await self.ls.workspace_configuration_async(
                types.ConfigurationParams(items=items)
            )
        except JsonRpcException as exc:  # the client failed the request: keep what we had
            log.warning("workspace/configuration failed: %s", exc)
            return
        # strict=False: a client that answers fewer (or more) items than asked leaves the rest
        for scope, value in zip(scopes, values or [], strict=False):
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
        await self.config_for(None)
        for root in roots:
            await self.config_for(root)  # its problems are shown; sessions take it when they start

    async def register_for_changes(self) -> None:
        """Ask for ``workspace/didChangeConfiguration`` when the client wants it registered."""
        if not get_capability(
            self.ls.client_capabilities,
            "workspace.did_change_configuration.dynamic_registration",
            False,
        ):
            return
        reg = types.Registration(
            id="handoff-configuration",
            method=types.WORKSPACE_DID_CHANGE_CONFIGURATION,
            register_options=types.DidChangeConfigurationRegistrationOptions(section=SECTION),
        )
        try:
            await self.ls.client_register_capability_async(
                types.RegistrationParams(registrations=[reg])
            )
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
        self.ls.window_show_message(
            types.ShowMessageParams(type=types.MessageType.Warning, message=text)
        )


async def trust(ls: HandoffServer, root: Path) -> dict[str, Any]:
    """Trust ``root``'s Handoff settings as they are now (in the daemon, which keeps the record)."""
    result = await ls.repos.call(protocol.TRUST, {"root": str(root)})
    keys = ", ".join(result.get("guarded") or []) or "nothing that needs trust"
    ls.show(f"Handoff: trusted {result['file']} as it is now ({keys}); a change to it asks again.")
    return result
