"""The client capabilities of a bare LSP client, as Helix is: no change annotations, no work-done
progress, no handler for custom notifications."""

from __future__ import annotations

from lsprotocol import types

HELIX_LIKE = types.ClientCapabilities(
    workspace=types.WorkspaceClientCapabilities(
        apply_edit=True,
        workspace_edit=types.WorkspaceEditClientCapabilities(
            document_changes=True,
            resource_operations=[
                types.ResourceOperationKind.Create,
                types.ResourceOperationKind.Rename,
                types.ResourceOperationKind.Delete,
            ],
        ),
        workspace_folders=True,
        configuration=False,
    ),
    text_document=types.TextDocumentClientCapabilities(
        code_action=types.CodeActionClientCapabilities(
            code_action_literal_support=types.ClientCodeActionLiteralOptions(
                code_action_kind=types.ClientCodeActionKindOptions(
                    value_set=[
                        "",
                        "quickfix",
                        "refactor",
                        "refactor.extract",
                        "refactor.inline",
                        "refactor.rewrite",
                        "source",
                        "source.organizeImports",
                    ]
                )
            ),
            data_support=True,
        ),
        publish_diagnostics=types.PublishDiagnosticsClientCapabilities(
            related_information=True, data_support=True
        ),
    ),
    window=types.WindowClientCapabilities(work_done_progress=False),
)
