// The status bar item ("Handoff: 2 running, 1 ready", spinning while agents work, hidden when no
// session is live) and the session quick pick with its actions.
import * as vscode from 'vscode';
import { HandoffClient, message } from './client';
import { reviewSession } from './review';
import { ACTIVE_STATES, Session, SessionState, SessionStore, age, cost, summarize } from './sessions';

export const SHOW_SESSIONS_COMMAND = 'handoff.showSessions';

const STATE_ICON: Record<SessionState, string> = {
  queued: '$(clock)',
  running: '$(sync~spin)',
  ready: '$(check)',
  applied: '$(pass-filled)',
  failed: '$(error)',
  cancelled: '$(circle-slash)',
  discarded: '$(trash)',
  interrupted: '$(debug-pause)',
};

export class StatusItem implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private readonly subscription: vscode.Disposable;

  constructor(private readonly store: SessionStore) {
    this.item = vscode.window.createStatusBarItem('handoff.status', vscode.StatusBarAlignment.Left, 10);
    this.item.name = 'Handoff';
    this.item.command = SHOW_SESSIONS_COMMAND;
    this.subscription = store.onDidChange(() => this.render());
    this.render();
  }

  render(): void {
    const sessions = this.store.all();
    const text = summarize(sessions);
    if (!text) {
      this.item.hide();
      return;
    }
    const busy = sessions.some((s) => ACTIVE_STATES.has(s.state));
    this.item.text = `${busy ? '$(sync~spin)' : '$(hubot)'} Handoff: ${text}`;
    this.item.accessibilityInformation = { label: `Handoff: ${text}`, role: 'button' };
    const tip = new vscode.MarkdownString(undefined, true);
    tip.appendMarkdown('**Handoff sessions** (click to act on one)\n\n');
    for (const s of this.store.live()) {
      tip.appendMarkdown(`- ${STATE_ICON[s.state] ?? ''} ${escape(s.title)}: ${s.state}, ${age(s.createdAt)}\n`);
    }
    this.item.tooltip = tip;
    this.item.show();
  }

  dispose(): void {
    this.subscription.dispose();
    this.item.dispose();
  }
}

interface SessionPickItem extends vscode.QuickPickItem {
  session: Session;
}

type Action = 'apply' | 'review' | 'followUp' | 'resume' | 'cancel' | 'discard' | 'show';

interface ActionPickItem extends vscode.QuickPickItem {
  action: Action;
}

const ACTIONS: Record<Action, { label: string; detail: string }> = {
  apply: { label: '$(check) Apply', detail: 'Merge the result into your files (three-way) as ordinary edits' },
  review: { label: '$(diff) Review diff', detail: 'Compare each changed file with the proposed result before applying' },
  followUp: { label: '$(comment-discussion) Follow up', detail: 'Give the agent another instruction in the same worktree' },
  resume: { label: '$(debug-continue) Resume', detail: 'Run the last instruction again in the same worktree' },
  cancel: { label: '$(debug-stop) Cancel', detail: 'Stop the agent' },
  discard: { label: '$(trash) Discard', detail: 'Drop the result and remove its worktree and branch' },
  show: { label: '$(output) Show transcript', detail: "Open the session's transcript and diff" },
};

// The server's action names (`Session.actions`) as entries of the quick pick; `reject` is per
// change (the CodeLens of each hunk), so it has no entry here.
const FROM_SERVER: Record<string, Action> = {
  apply: 'apply',
  applyHunks: 'review',
  followUp: 'followUp',
  resume: 'resume',
  cancel: 'cancel',
  discard: 'discard',
  show: 'show',
};

/** What may be done with the session now, as the server says (`Session.actions`), in its order. */
export function actionsFor(session: Session): Action[] {
  const names = Array.isArray(session.actions) ? session.actions : ['show'];
  return names.map((n) => FROM_SERVER[n]).filter((a): a is Action => a !== undefined);
}

/** Quick pick of sessions, then of an action for the chosen one. */
export async function showSessions(client: HandoffClient, store: SessionStore): Promise<void> {
  if (client.running) {
    // The notification keeps the store current; asking once more covers a missed one.
    try {
      const result = await client.execute<{ sessions?: Session[] }>('handoff.listSessions', {});
      if (Array.isArray(result?.sessions)) {
        store.replace(result.sessions);
      }
    } catch (err) {
      client.output.appendLine(`[handoff] handoff.listSessions failed: ${message(err)}`);
    }
  }
  const sessions = store
    .all()
    .filter((s) => s.state !== 'discarded')
    .sort((a, b) => (b.updatedAt ?? '').localeCompare(a.updatedAt ?? ''));
  if (sessions.length === 0) {
    void vscode.window.showInformationMessage('Handoff: no sessions yet. Select code and run "Handoff: Delegate Selection...".');
    return;
  }
  const picked = await vscode.window.showQuickPick<SessionPickItem>(
    sessions.map((s) => ({
      label: `${STATE_ICON[s.state] ?? ''} ${s.title || s.id}`,
      description: [s.state, age(s.createdAt)].filter(Boolean).join(' · '),
      detail: sessionDetail(s),
      session: s,
    })),
    { title: 'Handoff sessions', placeHolder: 'Pick a session to act on', matchOnDescription: true, matchOnDetail: true },
  );
  if (!picked) {
    return;
  }
  const session = picked.session;
  const action = await vscode.window.showQuickPick<ActionPickItem>(
    actionsFor(session).map((a) => ({ label: ACTIONS[a].label, detail: ACTIONS[a].detail, action: a })),
    { title: `Handoff: ${session.title || session.id}`, placeHolder: `${session.state}: what to do with it` },
  );
  if (action) {
    await runAction(client, action.action, session);
  }
}

function sessionDetail(s: Session): string {
  const files = s.filesChanged?.length ?? 0;
  const hunks = s.state === 'ready' ? s.hunks ?? 0 : 0;
  const parts = [
    `${files} file${files === 1 ? '' : 's'} changed`,
    hunks > 0 ? `${hunks} change${hunks === 1 ? '' : 's'} left` : '',
    cost(s.costUsd),
    s.agent ? `agent ${s.agent}` : '',
    s.error ? `error: ${s.error}` : s.summary ?? '',
  ];
  return parts.filter(Boolean).join(' · ');
}

export async function runAction(client: HandoffClient, action: Action, session: Session): Promise<void> {
  const sessionId = session.id;
  try {
    switch (action) {
      case 'apply': {
        const r = await client.execute<{ applied?: boolean; conflicts?: number }>('handoff.apply', { sessionId });
        const conflicts = r?.conflicts ?? 0;
        if (r?.applied === false) {
          void vscode.window.showWarningMessage(
            `Handoff: "${session.title}" was not applied${conflicts ? ` (${conflicts} conflict${conflicts === 1 ? '' : 's'})` : ''}.`,
          );
        } else if (conflicts > 0) {
          void vscode.window.showWarningMessage(
            `Handoff: "${session.title}" applied with ${conflicts} conflict${conflicts === 1 ? '' : 's'}; see the Problems panel.`,
          );
        } else {
          vscode.window.setStatusBarMessage(`Handoff: applied "${session.title}"`, 5000);
        }
        return;
      }
      case 'review':
        await reviewSession(client, session);
        return;
      case 'followUp': {
        const instruction = await vscode.window.showInputBox({
          title: `Handoff: follow up on "${session.title}"`,
          prompt: 'What should the agent do next, in the same worktree?',
          placeHolder: 'e.g. also add tests',
          ignoreFocusOut: true,
        });
        if (!instruction) {
          return;
        }
        await client.execute('handoff.followUp', { sessionId, instruction });
        return;
      }
      case 'resume':
        await client.execute('handoff.followUp', { sessionId, instruction: session.instruction });
        return;
      case 'cancel':
        await client.execute('handoff.cancel', { sessionId });
        return;
      case 'discard': {
        const sure = await vscode.window.showWarningMessage(
          `Discard "${session.title}"? Its result, worktree and branch are removed.`,
          { modal: true },
          'Discard',
        );
        if (sure === 'Discard') {
          await client.execute('handoff.discard', { sessionId });
        }
        return;
      }
      case 'show':
        await client.execute('handoff.show', { sessionId });
        return;
    }
  } catch (err) {
    void vscode.window.showErrorMessage(`Handoff: ${ACTIONS[action].label.replace(/^\$\([^)]*\) /, '')} failed: ${message(err)}`);
  }
}

function escape(text: string): string {
  return text.replace(/[\\`*_{}[\]()#+\-.!|<>]/g, '\\$&');
}
