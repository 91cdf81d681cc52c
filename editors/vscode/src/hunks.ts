// Inline review: each change (hunk) of a ready session shown where it lands, beside the
// side-by-side "Review diff". The lines a change replaces are marked as removed, the proposed text
// is shown after them (and in full on hover), and CodeLenses above each change offer Accept /
// Reject (a reason asked for, optional: with one the agent follows up) and, above the first change
// of a file, Accept all / Reject all. The hunks come from `handoff.preview {sessionId}`
// (`files[].hunks = [{id, range, newText, oldText}]`), asked again when the session's result or
// count of changes moves, or the document is edited.
import * as vscode from 'vscode';
import { HandoffClient, message } from './client';
import { Session, SessionStore } from './sessions';

export const ACCEPT_HUNK = 'handoff.acceptHunk';
export const REJECT_HUNK = 'handoff.rejectHunk';
export const ACCEPT_ALL = 'handoff.acceptAllHunks';
export const REJECT_ALL = 'handoff.rejectAllHunks';
const SHOWN_CHARS = 160;

interface WireHunk {
  id: string;
  range: { start: { line: number; character: number }; end: { line: number; character: number } };
  newText: string;
  oldText: string;
  file?: boolean;
}

interface Hunk {
  id: string;
  sessionId: string;
  title: string;
  uri: string;
  range: vscode.Range;
  newText: string;
  oldText: string;
}

export class InlineReview implements vscode.Disposable, vscode.CodeLensProvider {
  private readonly byUri = new Map<string, Hunk[]>();
  private readonly asked = new Map<string, string>(); // session id -> signature last asked for
  private readonly lensEmitter = new vscode.EventEmitter<void>();
  readonly onDidChangeCodeLenses = this.lensEmitter.event;
  private readonly removed = vscode.window.createTextEditorDecorationType({
    isWholeLine: true,
    backgroundColor: new vscode.ThemeColor('diffEditor.removedLineBackground'),
    overviewRulerColor: new vscode.ThemeColor('editorOverviewRuler.deletedForeground'),
    overviewRulerLane: vscode.OverviewRulerLane.Left,
  });
  private readonly proposed = vscode.window.createTextEditorDecorationType({
    after: {
      color: new vscode.ThemeColor('gitDecoration.addedResourceForeground'),
      backgroundColor: new vscode.ThemeColor('diffEditor.insertedTextBackground'),
      margin: '0 0 0 2em',
      textDecoration: 'none; white-space: pre', // keep the proposed text's spaces
    },
  });
  private readonly disposables: vscode.Disposable[] = [];
  private editTimer: NodeJS.Timeout | undefined;

  constructor(private readonly client: HandoffClient, private readonly store: SessionStore) {
    this.disposables.push(
      this.removed,
      this.proposed,
      this.lensEmitter,
      store.onDidChange((sessions) => this.sync(sessions)),
      vscode.window.onDidChangeVisibleTextEditors(() => this.decorateAll()),
      vscode.workspace.onDidChangeTextDocument((e) => this.edited(e.document)),
      vscode.languages.registerCodeLensProvider({ scheme: 'file' }, this),
      vscode.commands.registerCommand(ACCEPT_HUNK, (sessionId: string, id: string) => this.accept(sessionId, [id])),
      vscode.commands.registerCommand(REJECT_HUNK, (sessionId: string, id: string) => this.reject(sessionId, [id])),
      vscode.commands.registerCommand(ACCEPT_ALL, (sessionId: string) => this.acceptAll(sessionId)),
      vscode.commands.registerCommand(REJECT_ALL, (sessionId: string) =>
        this.reject(sessionId, this.hunksOf(sessionId).map((h) => h.id)),
      ),
    );
  }

  /** The hunks shown for `uri` (tests and the CodeLenses). */
  hunksAt(uri: vscode.Uri): Hunk[] {
    return this.byUri.get(uri.toString()) ?? [];
  }

  private hunksOf(sessionId: string): Hunk[] {
    return [...this.byUri.values()].flat().filter((h) => h.sessionId === sessionId);
  }

  private sync(sessions: Session[]): void {
    const live = new Set<string>();
    for (const s of sessions) {
      if (s.state === 'ready' && (s.hunks ?? 0) > 0) {
        live.add(s.id);
        const signature = `${s.resultCommit ?? ''}|${s.hunks}|${s.updatedAt ?? ''}`;
        if (this.asked.get(s.id) !== signature) {
          this.asked.set(s.id, signature);
          void this.refresh(s);
        }
      }
    }
    for (const id of [...this.asked.keys()]) {
      if (!live.has(id)) {
        this.asked.delete(id);
        this.drop(id);
      }
    }
  }

  private drop(sessionId: string): void {
    for (const [uri, hunks] of this.byUri) {
      const kept = hunks.filter((h) => h.sessionId !== sessionId);
      if (kept.length) {
        this.byUri.set(uri, kept);
      } else {
        this.byUri.delete(uri);
      }
    }
    this.changed();
  }

  private async refresh(session: Session): Promise<void> {
    let files: Array<{ uri: string; hunks?: WireHunk[] }>;
    try {
      const result = await this.client.execute<{ files?: typeof files }>('handoff.preview', { sessionId: session.id });
      files = Array.isArray(result?.files) ? result.files : [];
    } catch (err) {
      this.client.output.appendLine(`[handoff] handoff.preview ${session.id}: ${message(err)}`);
      return; // no longer ready: the next session list says so
    }
    for (const [uri, hunks] of this.byUri) {
      this.byUri.set(uri, hunks.filter((h) => h.sessionId !== session.id));
    }
    for (const f of files) {
      const uri = this.client.fromProtocolUri(f.uri).toString();
      const hunks = (f.hunks ?? []).filter((h) => !h.file).map((h) => ({
        id: h.id,
        sessionId: session.id,
        title: session.title || session.id,
        uri,
        range: this.client.fromProtocolRange(h.range),
        newText: h.newText,
        oldText: h.oldText,
      }));
      const all = [...(this.byUri.get(uri) ?? []), ...hunks].sort((a, b) => a.range.start.line - b.range.start.line);
      if (all.length) {
        this.byUri.set(uri, all);
      } else {
        this.byUri.delete(uri);
      }
    }
    this.changed();
  }

  private edited(document: vscode.TextDocument): void {
    const key = document.uri.toString();
    const hunks = this.byUri.get(key);
    if (!hunks || hunks.length === 0) {
      return;
    }
    // The server merges again against the text as it is now: ask once the typing stops.
    if (this.editTimer) {
      clearTimeout(this.editTimer);
    }
    const sessions = new Set(hunks.map((h) => h.sessionId));
    this.editTimer = setTimeout(() => {
      for (const id of sessions) {
        const s = this.store.get(id);
        if (s) {
          void this.refresh(s);
        }
      }
    }, 400);
  }

  private changed(): void {
    this.decorateAll();
    this.lensEmitter.fire();
  }

  private decorateAll(): void {
    for (const editor of vscode.window.visibleTextEditors) {
      this.decorate(editor);
    }
  }

  private decorate(editor: vscode.TextEditor): void {
    const hunks = this.byUri.get(editor.document.uri.toString()) ?? [];
    const removed: vscode.DecorationOptions[] = [];
    const proposed: vscode.DecorationOptions[] = [];
    for (const h of hunks) {
      const raw = h.newText.replace(/\n$/, '').split('\n');
      const indent = Math.min(...raw.filter((l) => l.trim()).map((l) => l.length - l.trimStart().length), 1e9);
      const lines = raw.map((l) => l.slice(Math.min(indent, l.length - l.trimStart().length)));
      const hover = new vscode.MarkdownString();
      hover.appendMarkdown(`**Handoff** “${h.title}” proposes:\n`);
      hover.appendCodeblock(h.newText || '(removes these lines)', editor.document.languageId);
      let last = h.range.end.line - (h.range.end.character === 0 && h.range.end.line > h.range.start.line ? 1 : 0);
      if (h.range.isEmpty) {
        last = Math.max(0, h.range.start.line - 1); // an insertion: shown after the line above it
      } else {
        removed.push({ range: new vscode.Range(h.range.start.line, 0, last, 0), hoverMessage: hover });
      }
      last = Math.min(last, editor.document.lineCount - 1);
      let shown = h.newText ? `⟶ ${lines.join(' ⏎ ')}` : '⟶ (removed)';
      if (shown.length > SHOWN_CHARS) {
        shown = `${shown.slice(0, SHOWN_CHARS - 1)}…`;
      }
      const end = editor.document.lineAt(last).range.end;
      proposed.push({
        range: new vscode.Range(end, end),
        hoverMessage: hover,
        renderOptions: { after: { contentText: shown } },
      });
    }
    editor.setDecorations(this.removed, removed);
    editor.setDecorations(this.proposed, proposed);
  }

  provideCodeLenses(document: vscode.TextDocument): vscode.CodeLens[] {
    const hunks = this.byUri.get(document.uri.toString()) ?? [];
    const lenses: vscode.CodeLens[] = [];
    const firstOf = new Set<string>();
    for (const h of hunks) {
      const at = new vscode.Range(h.range.start.line, 0, h.range.start.line, 0);
      if (!firstOf.has(h.sessionId)) {
        firstOf.add(h.sessionId);
        const n = this.hunksOf(h.sessionId).length;
        if (n > 1) {
          lenses.push(new vscode.CodeLens(at, { title: `$(check-all) Accept all ${n}`, command: ACCEPT_ALL, arguments: [h.sessionId] }));
          lenses.push(new vscode.CodeLens(at, { title: '$(close-all) Reject all', command: REJECT_ALL, arguments: [h.sessionId] }));
        }
      }
      lenses.push(new vscode.CodeLens(at, { title: '$(check) Accept', command: ACCEPT_HUNK, arguments: [h.sessionId, h.id] }));
      lenses.push(new vscode.CodeLens(at, { title: '$(close) Reject', command: REJECT_HUNK, arguments: [h.sessionId, h.id] }));
    }
    return lenses;
  }

  private forget(sessionId: string, ids: string[]): void {
    for (const [uri, hunks] of this.byUri) {
      this.byUri.set(uri, hunks.filter((h) => h.sessionId !== sessionId || !ids.includes(h.id)));
    }
    this.changed();
  }

  private async accept(sessionId: string, ids: string[]): Promise<void> {
    try {
      const r = await this.client.execute<{ applied?: boolean }>('handoff.apply', { sessionId, hunks: ids });
      if (r?.applied) {
        this.forget(sessionId, ids);
        vscode.window.setStatusBarMessage('Handoff: change accepted', 5000);
      } else {
        void vscode.window.showWarningMessage('Handoff: the change was not applied.');
      }
    } catch (err) {
      void vscode.window.showErrorMessage(`Handoff: Accept failed: ${message(err)}`);
    }
  }

  private async acceptAll(sessionId: string): Promise<void> {
    try {
      const r = await this.client.execute<{ applied?: boolean; conflicts?: number }>('handoff.apply', { sessionId });
      if (r?.applied === false) {
        void vscode.window.showWarningMessage(`Handoff: not applied (${r.conflicts ?? 0} conflict(s)); see the Problems panel.`);
      }
    } catch (err) {
      void vscode.window.showErrorMessage(`Handoff: Accept all failed: ${message(err)}`);
    }
  }

  private async reject(sessionId: string, ids: string[]): Promise<void> {
    if (ids.length === 0) {
      return;
    }
    const reason = await vscode.window.showInputBox({
      title: `Handoff: reject ${ids.length === 1 ? 'this change' : `${ids.length} changes`}`,
      prompt: 'Why? (optional: with a reason the agent follows up with it; Enter without one just drops it)',
      placeHolder: 'e.g. keep the public name, rename only the local variable',
      ignoreFocusOut: true,
    });
    if (reason === undefined) {
      return; // Escape: nothing rejected
    }
    const arg: { sessionId: string; hunks: string[]; reason?: string } = { sessionId, hunks: ids };
    if (reason.trim()) {
      arg.reason = reason.trim();
    }
    try {
      await this.client.execute('handoff.reject', arg);
      this.forget(sessionId, ids);
      vscode.window.setStatusBarMessage(arg.reason ? 'Handoff: rejected; the agent follows up' : 'Handoff: rejected', 5000);
    } catch (err) {
      void vscode.window.showErrorMessage(`Handoff: Reject failed: ${message(err)}`);
    }
  }

  dispose(): void {
    if (this.editTimer) {
      clearTimeout(this.editTimer);
    }
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}
