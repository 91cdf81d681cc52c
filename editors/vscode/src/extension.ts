// Entry point: wires the client, the session list, the status bar and the commands. Nothing else.
import * as vscode from 'vscode';
import { AgentChoice, CHOOSE_AGENT_COMMAND, chooseAgent } from './agents';
import { HandoffClient, message } from './client';
import { DELEGATE_COMMAND, DELEGATE_PROMPT_COMMAND, delegatePrompt, delegateSelection } from './delegate';
import { InlineReview } from './hunks';
import { actOnReviewed, pickAndReview, registerReview } from './review';
import { SessionStore } from './sessions';
import { SHOW_SESSIONS_COMMAND, StatusItem, showSessions } from './status';

let client: HandoffClient | undefined;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const handoff = new HandoffClient();
  client = handoff;
  const store = new SessionStore();
  const choice = new AgentChoice(context.workspaceState);
  handoff.onSessions((sessions) => store.replace(sessions));
  handoff.onDidChangeRunning(async (running) => {
    if (!running) {
      store.replace([]);
      return;
    }
    try {
      const result = await handoff.execute<{ sessions?: unknown }>('handoff.listSessions', {});
      if (Array.isArray(result?.sessions)) {
        store.replace(result.sessions);
      }
    } catch (err) {
      handoff.output.appendLine(`[handoff] handoff.listSessions failed: ${message(err)}`);
    }
  });

  context.subscriptions.push(
    store,
    choice,
    new StatusItem(store),
    registerReview(),
    new InlineReview(handoff, store),
    vscode.commands.registerCommand(DELEGATE_COMMAND, () => delegateSelection(handoff)),
    vscode.commands.registerCommand(DELEGATE_PROMPT_COMMAND, (arg) => delegatePrompt(handoff, arg)),
    vscode.commands.registerCommand(CHOOSE_AGENT_COMMAND, () => chooseAgent(handoff, choice)),
    vscode.commands.registerCommand(SHOW_SESSIONS_COMMAND, () => showSessions(handoff, store)),
    vscode.commands.registerCommand('handoff.reviewDiff', () => pickAndReview(handoff, store.all())),
    vscode.commands.registerCommand('handoff.applyReviewed', (uri?: vscode.Uri) =>
      actOnReviewed(handoff, store.all(), 'apply', uri),
    ),
    vscode.commands.registerCommand('handoff.discardReviewed', (uri?: vscode.Uri) =>
      actOnReviewed(handoff, store.all(), 'discard', uri),
    ),
    vscode.commands.registerCommand('handoff.restart', () => handoff.restart()),
    vscode.commands.registerCommand('handoff.showLog', () => handoff.output.show()),
  );
  await handoff.start();
}

export async function deactivate(): Promise<void> {
  await client?.dispose();
  client = undefined;
}
