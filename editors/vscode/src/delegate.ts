// "Handoff: Delegate Selection...": ask for an instruction, then `handoff.delegate {uri, range,
// instruction?, agent?}`. An empty instruction lets the server take the task from the comments /
// TODO; `agent` is the one chosen with "Handoff: Choose Agent..." (agents.ts), if any.
import * as vscode from 'vscode';
import { HandoffClient, message } from './client';
import { getChosenAgent } from './settings';

export const DELEGATE_COMMAND = 'handoff.delegateSelection';
/** Named by the server's code action "Delegate to background agent" on a selection with no TODO
 * or comment, because this client can ask (client.ts says so in its capabilities). */
export const DELEGATE_PROMPT_COMMAND = 'handoff.client.delegatePrompt';

interface DelegateArg {
  uri: string;
  range: object;
  diagnostics?: object[];
}

/** The code action's command: ask for the instruction, then `handoff.delegate` with it. */
export async function delegatePrompt(client: HandoffClient, arg: DelegateArg | undefined): Promise<void> {
  if (!arg || typeof arg.uri !== 'string') {
    return;
  }
  const agent = getChosenAgent();
  const instruction = await vscode.window.showInputBox({
    title: `Handoff: Delegate to background agent${agentNote(agent)}`,
    prompt: 'Instruction for the background agent',
    placeHolder: 'e.g. validate the arguments and raise ValueError on bad input',
    ignoreFocusOut: true,
  });
  if (!instruction || !instruction.trim()) {
    return; // Escape or nothing typed: nothing delegated
  }
  try {
    const result = await client.execute<{ sessionId?: string }>('handoff.delegate', {
      ...arg,
      instruction: instruction.trim(),
      ...(agent ? { agent } : {}),
    });
    vscode.window.setStatusBarMessage(`Handoff: delegated (session ${result?.sessionId ?? '?'})`, 5000);
  } catch (err) {
    void vscode.window.showErrorMessage(`Handoff: could not delegate: ${message(err)}`);
  }
}

export async function delegateSelection(client: HandoffClient): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  if (!editor) {
    void vscode.window.showWarningMessage('Handoff: open a file and select the code to delegate first.');
    return;
  }
  const document = editor.document;
  const selection = editor.selection;
  const agent = getChosenAgent();
  const instruction = await vscode.window.showInputBox({
    title: `Handoff: Delegate Selection${agentNote(agent)}`,
    prompt: 'Instruction for the background agent (leave empty to use the comments / TODO in the selection)',
    placeHolder: 'e.g. validate the arguments and raise ValueError on bad input',
    ignoreFocusOut: true,
  });
  if (instruction === undefined) {
    return; // Escape: nothing delegated.
  }
  try {
    const { uri, range } = client.toProtocol(document.uri, selection);
    const arg: { uri: string; range: object; instruction?: string; agent?: string } = { uri, range };
    if (instruction.trim()) {
      arg.instruction = instruction.trim();
    }
    if (agent) {
      arg.agent = agent;
    }
    const result = await client.execute<{ sessionId?: string }>('handoff.delegate', arg);
    const id = result?.sessionId ?? '?';
    vscode.window.setStatusBarMessage(`Handoff: delegated (session ${id})`, 5000);
  } catch (err) {
    void vscode.window.showErrorMessage(`Handoff: could not delegate: ${message(err)}`);
  }
}

/** " (agent: NAME)" when an agent was chosen in this workspace ("Handoff: Choose Agent..."). */
function agentNote(agent: string | undefined): string {
  return agent ? ` (agent: ${agent})` : '';
}
