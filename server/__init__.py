"""handoff-lsp: the language server front of Handoff (pygls + lsprotocol).

One feature, one module:

- ``cli``: the ``handoff-lsp`` entry point (stdio / ``--tcp``, logging, a stdout only JSON-RPC uses)
- ``server``: the ``LanguageServer`` subclass, lifecycle handlers, background tasks
- ``repos``: a SessionManager per repository (multi-root), the open documents and overlays
- ``settings``: initializationOptions, ``workspace/configuration`` and its changes
- ``todos``: TODO / FIXME / XXX comments and the task a selection describes (pure)
- ``delegation``: editor context to a DelegateRequest (task, overlays, diagnostics in range)
- ``code_actions``: delegate actions, and Apply / Show / Follow up / Discard on diagnostics
- ``commands``: the ``handoff.*`` commands of docs/DESIGN.md (plus ``handoff.preview``)
- ``status``: ``handoff/sessions``, work-done progress, diagnostics that follow the text
- ``anchors``: ranges that move with edits (pure)
- ``apply``: three-way merge against the buffers now, one ``workspace/applyEdit``, conflicts
- ``edits``: merge plan to a versioned, minimal ``WorkspaceEdit`` (pure)
- ``show``: the session report for ``handoff.show`` and the file previews
- ``triggers``: ``TODO(agent):`` comments start a session on save
"""
