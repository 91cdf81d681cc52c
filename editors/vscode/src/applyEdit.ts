// `workspace/applyEdit` from the server. The server marks its edits with change annotations that
// need confirmation; VS Code turns those into the Refactor Preview with every change unchecked, so
// "Apply" would apply nothing until each box is ticked. Choosing Apply (in the session quick pick,
// after Review diff, or from a code action) is already the developer's confirmation, so unless
// `handoff.confirmEdits` is set the annotations keep their labels but ask for nothing more.
import * as vscode from 'vscode';
import {
  ApplyWorkspaceEditParams,
  ApplyWorkspaceEditRequest,
  ApplyWorkspaceEditResult,
  LanguageClient,
  TextDocumentEdit,
  WorkspaceEdit,
} from 'vscode-languageclient/node';
import { SECTION } from './settings';

export function registerApplyEdit(client: LanguageClient): void {
  // Registered before start, this replaces the library's default handler (same behaviour otherwise).
  client.onRequest(ApplyWorkspaceEditRequest.type, (params) => applyEdit(client, params));
}

async function applyEdit(client: LanguageClient, params: ApplyWorkspaceEditParams): Promise<ApplyWorkspaceEditResult> {
  const confirm = vscode.workspace.getConfiguration(SECTION).get<boolean>('confirmEdits') === true;
  const edit = confirm ? params.edit : withoutConfirmation(params.edit);
  const stale = staleDocument(client, edit);
  if (stale) {
    return { applied: false, failureReason: `${stale} changed since the server computed the edit` };
  }
  const converted = await client.protocol2CodeConverter.asWorkspaceEdit(edit);
  const applied = await vscode.workspace.applyEdit(converted);
  return applied ? { applied } : { applied, failureReason: 'VS Code did not apply the edit' };
}

export function withoutConfirmation(edit: WorkspaceEdit): WorkspaceEdit {
  if (!edit.changeAnnotations) {
    return edit;
  }
  const changeAnnotations: NonNullable<WorkspaceEdit['changeAnnotations']> = {};
  for (const [id, annotation] of Object.entries(edit.changeAnnotations)) {
    changeAnnotations[id] = { ...annotation, needsConfirmation: false };
  }
  return { ...edit, changeAnnotations };
}

/** The first open document whose version is not the one the edit was made for, if any. */
function staleDocument(client: LanguageClient, edit: WorkspaceEdit): string | undefined {
  const open = new Map(vscode.workspace.textDocuments.map((d) => [d.uri.toString(), d]));
  for (const change of edit.documentChanges ?? []) {
    if (!TextDocumentEdit.is(change)) {
      continue;
    }
    const version = change.textDocument.version;
    if (typeof version !== 'number' || version < 0) {
      continue;
    }
    const doc = open.get(client.protocol2CodeConverter.asUri(change.textDocument.uri).toString());
    if (doc && doc.version !== version) {
      return vscode.workspace.asRelativePath(doc.uri);
    }
  }
  return undefined;
}
