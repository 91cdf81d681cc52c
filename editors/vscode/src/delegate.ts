// "Handoff: Delegate Selection...": ask for an instruction, then `handoff.delegate {uri, range,
// instruction?}`. An empty instruction lets the server take the task from the comments / TODO.
import * as vscode from 'vscode';
import { HandoffClient, message } from './client';

export const DELEGATE_COMMAND = 'handoff.delegateSelection';

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
