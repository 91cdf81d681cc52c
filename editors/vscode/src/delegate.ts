// "Handoff: Delegate Selection...": ask for an instruction, then `handoff.delegate {uri, range,
// instruction?}`. An empty instruction lets the server take the task from the comments / TODO.
import * as vscode from 'vscode';
import { HandoffClient, message } from './client';

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
  const instruction = await vscode.window.showInputBox({
    title: 'Handoff: Delegate to background agent',
    prompt: 'Instruction for the background agent',
    placeHolder: 'e.g. validate the arguments and raise ValueError on bad input',
    ignoreFocusOut: true,
  });
  if (!instruction || !instruction.trim()) {
    return; // Escape or nothing typed: nothing delegated
  }
  try {
    const result = await client.execute<{ sessionId?: string }>('handoff.delegate', { ...arg, instruction: instruction.trim() });
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
  const instruction = await vscode.window.showInputBox({
    title: 'Handoff: Delegate Selection',
    prompt: 'Instruction for the background agent (leave empty to use the comments / TODO in the selection)',
    placeHolder: 'e.g. validate the arguments and raise ValueError on bad input',
    ignoreFocusOut: true,
  });
  if (instruction === undefined) {
    return; // Escape: nothing delegated.
  }
  try {
    const { uri, range } = client.toProtocol(document.uri, selection);
    const arg: { uri: string; range: object; instruction?: string } = { uri, range };
    if (instruction.trim()) {
      arg.instruction = instruction.trim();
    }
    const result = await client.execute<{ sessionId?: string }>('handoff.delegate', arg);
    const id = result?.sessionId ?? '?';
    vscode.window.setStatusBarMessage(`Handoff: delegated (session ${id})`, 5000);
  } catch (err) {
    void vscode.window.showErrorMessage(`Handoff: could not delegate: ${message(err)}`);
  }
}
