// "Handoff: Choose Agent...": the agents the server can run (`handoff.agents`: the built-in one,
// the presets and the configured agents, each with whether its executable is found), as a quick
// pick. The chosen one is this workspace's agent for the next delegations: it overrides `agent`
// in the configuration this client sends (settings.ts), and the delegate commands name it. An
// agent that is not installed is listed apart, says so and how to install it, and is not chosen.
import * as vscode from 'vscode';
import { HandoffClient, message } from './client';
import { setChosenAgent } from './settings';

export const CHOOSE_AGENT_COMMAND = 'handoff.chooseAgent';
const MEMENTO_KEY = 'handoff.chosenAgent';

/** One row of `handoff.agents` (agent/presets.py `AgentRow`). */
export interface AgentInfo {
  name: string;
  kind: 'acp' | 'command' | 'builtin' | string;
  source: string;
  argv: string[];
  found: string | null;
  install: string;
  needs: string[];
  needsSet: string[];
  default: boolean;
  docs?: string;
}

interface AgentPickItem extends vscode.QuickPickItem {
  agent?: AgentInfo;
  reset?: boolean;
}

/** The agent chosen in this workspace (kept in the workspace state, never in the tree). */
export class AgentChoice {
  private readonly emitter = new vscode.EventEmitter<string | undefined>();
  readonly onDidChange = this.emitter.event;

  constructor(private readonly state: vscode.Memento) {
    setChosenAgent(this.get());
  }

  get(): string | undefined {
    const v = this.state.get<unknown>(MEMENTO_KEY);
    return typeof v === 'string' && v ? v : undefined;
  }

  async set(name: string | undefined): Promise<void> {
    await this.state.update(MEMENTO_KEY, name);
    setChosenAgent(name);
    this.emitter.fire(name);
  }

  dispose(): void {
    this.emitter.dispose();
  }
}

/** What `handoff.agents` says for the active editor's repository (or the only one). */
export async function listAgents(client: HandoffClient): Promise<AgentInfo[]> {
  const doc = vscode.window.activeTextEditor?.document;
  const arg = doc && doc.uri.scheme === 'file' ? { uri: client.toProtocolUri(doc.uri) } : {};
  const result = await client.execute<{ agents?: AgentInfo[] }>('handoff.agents', arg);
  return Array.isArray(result?.agents) ? result.agents : [];
}

export function installed(a: AgentInfo): boolean {
  return typeof a.found === 'string' && a.found !== '';
}

function describe(a: AgentInfo, chosen: string | undefined): string {
  const parts = [a.kind === 'builtin' ? 'built-in' : a.kind, a.source];
  if (chosen === a.name) {
    parts.push('chosen here');
  } else if (a.default && !chosen) {
    parts.push('default');
  }
  return parts.join(' · ');
}

export function agentItems(agents: AgentInfo[], chosen: string | undefined): AgentPickItem[] {
  const ready = agents.filter(installed);
  const missing = agents.filter((a) => !installed(a));
  const items: AgentPickItem[] = [];
  if (chosen) {
    items.push({
      label: '$(discard) Use the configured default',
      detail: `Forget the choice of "${chosen}" in this workspace: .handoff.toml and the settings decide again`,
      reset: true,
    });
  }
  items.push({ label: 'Installed', kind: vscode.QuickPickItemKind.Separator });
  for (const a of ready) {
    const current = chosen ? chosen === a.name : a.default;
    items.push({
      label: `${current ? '$(check)' : '$(hubot)'} ${a.name}`,
      description: describe(a, chosen),
      detail: [a.kind === 'builtin' ? 'in Handoff' : a.found, a.docs].filter(Boolean).join(' · '),
      agent: a,
    });
  }
  if (missing.length) {
    items.push({ label: 'Not installed (cannot be chosen)', kind: vscode.QuickPickItemKind.Separator });
  }
  for (const a of missing) {
    const builtin = a.kind === 'builtin';
    items.push({
      label: `$(warning) ${a.name}`,
      description: `${describe(a, chosen)} · ${builtin ? 'no model set' : 'not installed'}`,
      detail: builtin ? `to use it: ${a.install}` : `\`${a.argv[0] ?? a.name}\` is not on PATH · install: ${a.install}`,
      agent: a,
    });
  }
  return items;
}

/** The quick pick; choosing an installed agent makes it this workspace's agent. */
export async function chooseAgent(client: HandoffClient, choice: AgentChoice): Promise<void> {
  let agents: AgentInfo[];
  try {
    agents = await listAgents(client);
  } catch (err) {
    void vscode.window.showErrorMessage(`Handoff: could not list the agents: ${message(err)}`);
    return;
  }
  const chosen = choice.get();
  const picked = await vscode.window.showQuickPick(agentItems(agents, chosen), {
    title: 'Handoff: Choose Agent',
    placeHolder: `The agent for the next delegations in this workspace${chosen ? ` (now: ${chosen})` : ''}`,
    matchOnDescription: true,
    matchOnDetail: true,
  });
  if (!picked) {
    return;
  }
  if (picked.reset) {
    await choice.set(undefined);
    client.configurationChanged();
    vscode.window.setStatusBarMessage('Handoff: the configured default agent is used again', 5000);
    return;
  }
  const agent = picked.agent;
  if (!agent) {
    return;
  }
  if (!installed(agent)) {
    const why =
      agent.kind === 'builtin'
        ? `the built-in agent has no model: ${agent.install}`
        : `agent "${agent.name}" is not installed (\`${agent.argv[0] ?? agent.name}\` was not found on PATH); install it: ${agent.install}`;
    const copy = agent.kind === 'builtin' ? undefined : 'Copy Install Command';
    const answer = await vscode.window.showWarningMessage(`Handoff: ${why}`, ...(copy ? [copy] : []));
    if (copy && answer === copy) {
      await vscode.env.clipboard.writeText(agent.install);
    }
    return;
  }
  await choice.set(agent.name);
  client.configurationChanged();
  const needs = agent.needs.length && !agent.needsSet.length ? ` (it needs one of ${agent.needs.join(', ')} unless its own configuration has them)` : '';
  vscode.window.setStatusBarMessage(`Handoff: agent "${agent.name}" for the next delegations${needs}`, 8000);
}
