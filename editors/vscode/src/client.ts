// The language client: finding and starting `handoff-lsp`, the "Handoff" output channel, restarts,
// and the one way the rest of the extension talks to the server (`execute`).
import * as fs from 'fs';
import * as path from 'path';
import * as vscode from 'vscode';
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
  State,
  StaticFeature,
  TransportKind,
} from 'vscode-languageclient/node';
import { registerApplyEdit } from './applyEdit';
import {
  SECTION,
  affectsServerCommand,
  getChosenAgent,
  handoffConfig,
  ignoredWorkspaceKeys,
  serverSettings,
} from './settings';
import { Session } from './sessions';

export const CLIENT_ID = 'handoff';
export const CLIENT_NAME = 'Handoff';

export interface ServerCommand {
  command: string;
  args: string[];
  /** Where the command came from, for messages. */
  origin: string;
}

/** Resolve how to start the server, or explain why it cannot be found. */
export function resolveServer(): ServerCommand | { error: string } {
  const s = serverSettings();
  if (s.path) {
    if (!isExecutable(s.path)) {
      return { error: `\`handoff.server.path\` is set to "${s.path}", but no executable file is there.` };
    }
    return { command: s.path, args: s.args, origin: 'handoff.server.path' };
  }
  if (s.python) {
    const python = path.isAbsolute(s.python) ? s.python : findOnPath(s.python);
    if (!python || !isExecutable(python)) {
      return { error: `\`handoff.server.python\` is set to "${s.python}", but that interpreter was not found.` };
    }
    return { command: python, args: ['-m', 'handoff.server', ...s.args], origin: 'handoff.server.python' };
  }
  const found = findOnPath('handoff-lsp');
  if (found) {
    return { command: found, args: s.args, origin: 'PATH' };
  }
  return {
    error:
      'The language server `handoff-lsp` was not found on PATH. Install it from a clone of Handoff (`pipx install .`) ' +
      'or set `handoff.server.path` (the executable) or `handoff.server.python` (an interpreter that has it).',
  };
}

/** Owns the LanguageClient; survives restarts so other modules keep one reference. */
export class HandoffClient implements vscode.Disposable {
  readonly output: vscode.OutputChannel;
  private client: LanguageClient | undefined;
  private readonly sessionListeners: Array<(sessions: Session[]) => void> = [];
  private readonly stateEmitter = new vscode.EventEmitter<boolean>();
  /** Fires true when the server is up and answering, false when it stops. */
  readonly onDidChangeRunning = this.stateEmitter.event;
  private readonly disposables: vscode.Disposable[] = [];

  constructor() {
    this.output = vscode.window.createOutputChannel(CLIENT_NAME);
    this.disposables.push(
      this.output,
      this.stateEmitter,
      vscode.workspace.onDidChangeConfiguration((e) => this.onConfigChange(e)),
    );
  }

  get running(): boolean {
    return this.client?.state === State.Running;
  }

  /** Receive every `handoff/sessions` notification (the whole list). */
  onSessions(listener: (sessions: Session[]) => void): void {
    this.sessionListeners.push(listener);
  }

  async start(): Promise<boolean> {
    const server = resolveServer();
    if ('error' in server) {
      this.output.appendLine(`[handoff] ${server.error}`);
      void vscode.window
        .showErrorMessage(`Handoff: ${server.error}`, 'Open Settings', 'Show Log')
        .then((choice) => {
          if (choice === 'Open Settings') {
            void vscode.commands.executeCommand('workbench.action.openSettings', 'handoff.server');
          } else if (choice === 'Show Log') {
            this.output.show();
          }
        });
      return false;
    }
    this.output.appendLine(`[handoff] starting ${server.command} ${server.args.join(' ')} (from ${server.origin})`);
    const ignored = ignoredWorkspaceKeys();
    if (ignored.length) {
      const msg =
        `Handoff: ${ignored.join(', ')} in this workspace's settings ${ignored.length > 1 ? 'are' : 'is'} not used ` +
        '(such settings run programs or widen what agents may do): set them in your user settings, ' +
        "or in the repository's .handoff.toml and run `handoff trust`.";
      this.output.appendLine(`[handoff] ${msg}`);
      void vscode.window.showWarningMessage(msg);
    }
    const serverOptions: ServerOptions = {
      command: server.command,
      args: server.args,
      transport: TransportKind.stdio,
      options: { env: { ...process.env } },
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: [{ scheme: 'file' }, { scheme: 'untitled' }],
      outputChannel: this.output,
      initializationOptions: handoffConfig(),
      middleware: {
        // A delegation from a code action names the agent chosen in this workspace, as the
        // delegate commands do (the configuration carries it too, once the server pulled it).
        executeCommand: async (command, args, next) => {
          const agent = getChosenAgent();
          const first = args[0] as Record<string, unknown> | undefined;
          if (command === 'handoff.delegate' && agent && first && typeof first === 'object' && !first.agent) {
            return next(command, [{ ...first, agent }, ...args.slice(1)]);
          }
          return next(command, args);
        },
        workspace: {
          // Answer section `handoff` with the wire-shaped object, not VS Code's raw settings tree.
          configuration: async (params, token, next) => {
            const raw = await next(params, token);
            if (!Array.isArray(raw)) {
              return raw;
            }
            return params.items.map((item, i) => {
              if (item.section !== SECTION) {
                return raw[i];
              }
              const scope = item.scopeUri ? vscode.Uri.parse(item.scopeUri) : undefined;
              return handoffConfig(scope);
            });
          },
        },
      },
    };
    const client = new LanguageClient(CLIENT_ID, CLIENT_NAME, serverOptions, clientOptions);
    client.onNotification('handoff/sessions', (params: { sessions?: Session[] }) => {
      const sessions = Array.isArray(params?.sessions) ? params.sessions : [];
      for (const listener of this.sessionListeners) {
        listener(sessions);
      }
    });
    registerApplyEdit(client);
    client.registerFeature(PROMPT_FEATURE);
    client.onDidChangeState((e) => {
      if (e.newState === State.Stopped) {
        this.stateEmitter.fire(false);
      }
    });
    this.client = client;
    try {
      await client.start();
    } catch (err) {
      this.output.appendLine(`[handoff] the server failed to start: ${message(err)}`);
      void vscode.window
        .showErrorMessage(`Handoff: the language server failed to start (${message(err)}).`, 'Show Log')
        .then((choice) => choice && this.output.show());
      return false;
    }
    this.stateEmitter.fire(true);
    return true;
  }

  async stop(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    if (client && client.state !== State.Stopped) {
      try {
        await client.stop(5000);
      } catch (err) {
        this.output.appendLine(`[handoff] stopping the server: ${message(err)}`);
      }
    }
  }

  async restart(): Promise<void> {
    this.output.appendLine('[handoff] restarting the language server');
    await this.stop();
    await this.start();
  }

  /** `workspace/executeCommand` with one object argument (docs/DESIGN.md "Commands"). */
  async execute<T>(command: string, arg: object): Promise<T> {
    const client = this.client;
    if (!client || client.state !== State.Running) {
      throw new Error('the language server is not running (see the "Handoff" output, or run "Handoff: Restart Language Server")');
    }
    return (await client.sendRequest(ExecuteCommandRequest.type, { command, arguments: [arg] })) as T;
  }

  /** Tell the server the configuration changed (it pulls section `handoff` again). */
  configurationChanged(): void {
    const client = this.client;
    if (client && client.state === State.Running) {
      void client.sendNotification(DidChangeConfigurationNotification.type, { settings: null });
    }
  }

  /** The LSP URI of a document, as the server sees it. */
  toProtocolUri(uri: vscode.Uri): string {
    const conv = this.client?.code2ProtocolConverter;
    return conv ? conv.asUri(uri) : uri.toString();
  }

  /** The LSP URI and range of an editor selection, as the server sees them. */
  toProtocol(uri: vscode.Uri, range: vscode.Range): { uri: string; range: object } {
    const conv = this.client?.code2ProtocolConverter;
    if (!conv) {
      throw new Error('the language server is not running');
    }
    return { uri: conv.asUri(uri), range: conv.asRange(range) };
  }

  fromProtocolRange(range: { start: { line: number; character: number }; end: { line: number; character: number } }): vscode.Range {
    const conv = this.client?.protocol2CodeConverter;
    if (conv) {
      return conv.asRange(range);
    }
    return new vscode.Range(range.start.line, range.start.character, range.end.line, range.end.character);
  }

  fromProtocolUri(uri: string): vscode.Uri {
    const conv = this.client?.protocol2CodeConverter;
    return conv ? conv.asUri(uri) : vscode.Uri.parse(uri);
  }

  private onConfigChange(e: vscode.ConfigurationChangeEvent): void {
    // Changes of the configuration keys reach the server through the didChangeConfiguration
    // registration it makes (it then pulls section `handoff`); the command line needs a restart.
    if (affectsServerCommand(e)) {
      void vscode.window
        .showInformationMessage('Handoff: the server settings changed.', 'Restart Server')
        .then((choice) => choice && this.restart());
    }
  }

  async dispose(): Promise<void> {
    await this.stop();
    for (const d of this.disposables) {
      d.dispose();
    }
  }
}

/** Tells the server this client asks for instructions itself (`experimental.handoff.prompt`): its
 * code action on a bare selection then names `handoff.client.delegatePrompt` (delegate.ts). */
const PROMPT_FEATURE: StaticFeature = {
  fillClientCapabilities(capabilities) {
    const experimental = (capabilities.experimental ?? {}) as Record<string, unknown>;
    capabilities.experimental = { ...experimental, handoff: { prompt: true } };
  },
  initialize() {},
  getState() {
    return { kind: 'static' };
  },
  clear() {},
};

export function message(err: unknown): string {
  if (err instanceof Error) {
    return err.message;
  }
  if (err && typeof err === 'object' && 'message' in err) {
    return String((err as { message: unknown }).message);
  }
  return String(err);
}

function isExecutable(p: string): boolean {
  try {
    fs.accessSync(p, fs.constants.X_OK);
    return fs.statSync(p).isFile();
  } catch {
    return false;
  }
}

function findOnPath(name: string): string | undefined {
  const exts = process.platform === 'win32' ? (process.env.PATHEXT ?? '.EXE;.CMD').split(';') : [''];
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) {
      continue;
    }
    for (const ext of exts) {
      const candidate = path.join(dir, name + ext);
      if (isExecutable(candidate)) {
        return candidate;
      }
    }
  }
  return undefined;
}
