// Review diff: VS Code's diff editor between each file as it is now and the proposed merge result,
// the latter a read-only virtual document served from `handoff.preview {sessionId}`.
import * as path from 'path';
import * as vscode from 'vscode';
import { HandoffClient, message } from './client';
import { Session } from './sessions';
import { runAction } from './status';

export const PROPOSED_SCHEME = 'handoff-proposed';

interface PreviewFile {
  uri: string;
  /** The proposed content; null or absent when the session deletes the file. */
  content?: string | null;
}

/** Serves `handoff-proposed:` documents; contents are kept per session until the next preview. */
export class ProposedContentProvider implements vscode.TextDocumentContentProvider, vscode.Disposable {
  private readonly contents = new Map<string, string>();
  private readonly emitter = new vscode.EventEmitter<vscode.Uri>();
  readonly onDidChange = this.emitter.event;

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.contents.get(uri.toString()) ?? '';
  }

  set(uri: vscode.Uri, content: string): void {
    this.contents.set(uri.toString(), content);
    this.emitter.fire(uri);
  }

  dispose(): void {
    this.emitter.dispose();
    this.contents.clear();
  }
}

let provider: ProposedContentProvider | undefined;

export function registerReview(): vscode.Disposable {
  provider = new ProposedContentProvider();
  return vscode.Disposable.from(
    provider,
    vscode.workspace.registerTextDocumentContentProvider(PROPOSED_SCHEME, provider),
  );
}

/** The read-only URI showing ``file``'s proposed content for ``sessionId``. */
export function proposedUri(sessionId: string, file: vscode.Uri, kind: 'proposed' | 'empty' = 'proposed'): vscode.Uri {
  // Keep the file's name (and so its language) in the path; the session and kind in the query.
  return vscode.Uri.from({
    scheme: PROPOSED_SCHEME,
    path: file.path,
    query: new URLSearchParams({ session: sessionId, kind }).toString(),
  });
}

export async function reviewSession(client: HandoffClient, session: Session): Promise<void> {
  if (!provider) {
    throw new Error('review is not registered');
  }
  let files: PreviewFile[];
  try {
    const result = await client.execute<{ files?: PreviewFile[] }>('handoff.preview', { sessionId: session.id });
    files = Array.isArray(result?.files) ? result.files : [];
  } catch (err) {
    const choice = await vscode.window.showErrorMessage(
      `Handoff: the server cannot preview this session (${message(err)}). Show its diff instead?`,
      'Show Diff',
    );
    if (choice) {
      await client.execute('handoff.show', { sessionId: session.id });
    }
    return;
  }
  if (files.length === 0) {
    void vscode.window.showInformationMessage(`Handoff: "${session.title}" changes no file.`);
    return;
  }
  let chosen = files;
  if (files.length > 1) {
    const picks = await vscode.window.showQuickPick(
      files.map((f) => ({ label: path.basename(client.fromProtocolUri(f.uri).fsPath), description: vscode.workspace.asRelativePath(client.fromProtocolUri(f.uri)), file: f })),
      { title: `Handoff: review "${session.title}"`, placeHolder: 'Files to compare (each opens a diff editor)', canPickMany: true },
    );
    if (!picks || picks.length === 0) {
      return;
    }
    chosen = picks.map((p) => p.file);
  }
  for (const f of chosen) {
    await openDiff(client, session, f);
  }
  // The diff editors carry Apply / Discard buttons in their title bar (package.json, editor/title).
  vscode.window.setStatusBarMessage(
    `Handoff: reviewing ${chosen.length} file${chosen.length === 1 ? '' : 's'}; Apply ($(check)) or Discard ($(trash)) in the diff's title bar`,
    10000,
  );
}

/** The session a `handoff-proposed:` document belongs to. */
export function sessionOfProposed(uri: vscode.Uri | undefined): string | undefined {
  if (!uri || uri.scheme !== PROPOSED_SCHEME) {
    return undefined;
  }
  return new URLSearchParams(uri.query).get('session') ?? undefined;
}

/** Apply or discard the session shown in the active diff editor (its title-bar buttons). */
export async function actOnReviewed(
  client: HandoffClient,
  sessions: Session[],
  action: 'apply' | 'discard',
  uri?: vscode.Uri,
): Promise<void> {
  const target = uri ?? vscode.window.activeTextEditor?.document.uri;
  const id = sessionOfProposed(target);
  if (!id) {
    void vscode.window.showWarningMessage('Handoff: open a session\'s diff (Review diff) first.');
    return;
  }
  const session = sessions.find((s) => s.id === id) ?? { id, title: id, state: 'ready' as const };
  await closeReviewTabs(id);
  await runAction(client, action, session);
}

/** Close every diff editor showing the proposed result of session ``id``. */
async function closeReviewTabs(id: string): Promise<void> {
  const tabs = vscode.window.tabGroups.all
    .flatMap((g) => g.tabs)
    .filter((t) => t.input instanceof vscode.TabInputTextDiff && sessionOfProposed(t.input.modified) === id);
  if (tabs.length > 0) {
    await vscode.window.tabGroups.close(tabs);
  }
}

async function openDiff(client: HandoffClient, session: Session, f: PreviewFile): Promise<void> {
  const current = client.fromProtocolUri(f.uri);
  const right = proposedUri(session.id, current);
  provider!.set(right, f.content ?? '');
  let left: vscode.Uri = current;
  let note = '';
  if (!(await exists(current))) {
    left = proposedUri(session.id, current, 'empty');
    provider!.set(left, '');
    note = ' (new file)';
  } else if (f.content === null || f.content === undefined) {
    note = ' (deleted)';
  }
  const title = `${path.basename(current.fsPath)}: current ↔ proposed by Handoff${note}`;
  await vscode.commands.executeCommand('vscode.diff', left, right, title, { preview: false });
}

async function exists(uri: vscode.Uri): Promise<boolean> {
  if (vscode.workspace.textDocuments.some((d) => d.uri.toString() === uri.toString())) {
    return true;
  }
  try {
    await vscode.workspace.fs.stat(uri);
    return true;
  } catch {
    return false;
  }
}

/** Pick a reviewable session, for the palette command "Handoff: Review Diff of a Session...". */
export async function pickAndReview(client: HandoffClient, sessions: Session[]): Promise<void> {
  const ready = sessions.filter((s) => s.state === 'ready');
  if (ready.length === 0) {
    void vscode.window.showInformationMessage('Handoff: no session is ready to review.');
    return;
  }
  const pick =
    ready.length === 1
      ? { session: ready[0] }
      : await vscode.window.showQuickPick(
          ready.map((s) => ({ label: s.title || s.id, description: s.id, session: s })),
          { title: 'Handoff: review which session?' },
        );
  if (pick) {
    await reviewSession(client, pick.session);
  }
}
