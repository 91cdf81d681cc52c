// Settings `handoff.*`: where the server lives, and the configuration object that mirrors the
// server's config keys (docs/DESIGN.md "Configuration"). The object is sent as initializationOptions and
// as the answer to `workspace/configuration` for section `handoff`. Unset settings (null) are left
// out, so the project's `.handoff.toml` and the environment keep their say.
import * as vscode from 'vscode';

export const SECTION = 'handoff';

export interface ServerSettings {
  /** Explicit path to the `handoff-lsp` executable, or "". */
  path: string;
  /** A Python interpreter to run `-m handoff.server` with, or "". */
  python: string;
  /** Extra command-line arguments for the server. */
  args: string[];
}

/** The wire-shaped configuration object (camelCase keys, `todo` nested). */
export interface HandoffConfig {
  model?: string;
  apiBase?: string;
  /** User or remote settings only (scope "machine"); better HANDOFF_API_KEY in the environment. */
  apiKey?: string;
  agent?: string;
  agents?: Record<string, {
    command?: string[]; acp?: string[]; passEnv?: string[]; env?: Record<string, string>;
    exclude?: string[]; permissions?: 'worktree' | 'reject' | 'ask';
  }>;
  maxParallel?: number;
  maxSteps?: number;
  maxCostUsd?: number;
  timeoutS?: number;
  testCommand?: string;
  autoApply?: boolean;
  todo?: { autoTrigger?: boolean };
  /** How the built-in agent's run_command runs; user or remote settings only. */
  commandPolicy?: 'sandbox' | 'allow' | 'deny';
  /** Secret-looking variables run_command may see; user or remote settings only. */
  passEnv?: string[];
  keepFinishedDays?: number;
  /** Globs kept out of every result. */
  exclude?: string[];
  /** How ACP agents' permission requests are answered. */
  permissions?: 'worktree' | 'reject' | 'ask';
  notify?: boolean;
  daemon?: { idleMinutes?: number };
  /** The warm pool: idle worktrees kept ready per repository (0: off). */
  pool?: { size?: number };
  /** Where agents run: this machine, or a Ray cluster (`ray.*`); user or remote settings only. */
  executor?: 'local' | 'ray';
  worktree?: { include?: string[]; setup?: string };
  ray?: { address?: string; numCpus?: number; memoryMb?: number; runtimeEnv?: Record<string, unknown> };
}

/** The flat keys mirrored one to one from settings `handoff.<key>`. */
const CONFIG_KEYS = [
  'model',
  'apiBase',
  'apiKey',
  'agent',
  'agents',
  'maxParallel',
  'maxSteps',
  'maxCostUsd',
  'timeoutS',
  'testCommand',
  'autoApply',
  'commandPolicy',
  'passEnv',
  'keepFinishedDays',
  'exclude',
  'permissions',
  'notify',
  'executor',
] as const;

/**
 * Keys that run programs or widen what an agent may do (agent/trust.py's GUARDED). A
 * workspace's `.vscode/settings.json` is a file of the repository, so for these only the
 * user's own (or remote) settings count: a repository sets them in `.handoff.toml`, where
 * `handoff trust` guards them. The workspace values found are reported by ignoredWorkspaceKeys.
 */
export const USER_ONLY_KEYS: readonly string[] = [
  'agent',
  'agents',
  'commandPolicy',
  'passEnv',
  'testCommand',
  'model',
  'apiBase',
  'autoApply',
  'maxCostUsd',
  'executor',
  'ray.address',
  'ray.runtimeEnv',
  'ray.numCpus',
  'ray.memoryMb',
  'worktree.setup',
  'worktree.include',
];

/** The value of `handoff.<key>` as the server should get it: for USER_ONLY_KEYS the user's. */
function setting(cfg: vscode.WorkspaceConfiguration, key: string): unknown {
  if (!USER_ONLY_KEYS.includes(key)) {
    return cfg.get<unknown>(key);
  }
  return cfg.inspect<unknown>(key)?.globalValue;
}

/** USER_ONLY_KEYS that a workspace (folder) setting sets, and that are therefore not used. */
export function ignoredWorkspaceKeys(scope?: vscode.ConfigurationScope): string[] {
  const cfg = vscode.workspace.getConfiguration(SECTION, scope);
  return USER_ONLY_KEYS.filter((key) => {
    const seen = cfg.inspect<unknown>(key);
    return seen?.workspaceValue !== undefined || seen?.workspaceFolderValue !== undefined;
  }).map((key) => `${SECTION}.${key}`);
}

export function serverSettings(): ServerSettings {
  const cfg = vscode.workspace.getConfiguration(SECTION);
  const args = cfg.get<unknown>('server.args');
  return {
    path: expandHome((cfg.get<string>('server.path') ?? '').trim()),
    python: expandHome((cfg.get<string>('server.python') ?? '').trim()),
    args: Array.isArray(args) ? args.filter((a): a is string => typeof a === 'string') : [],
  };
}

/** The agent chosen with "Handoff: Choose Agent..." in this workspace (agents.ts), or undefined. */
let chosenAgent: string | undefined;

export function setChosenAgent(name: string | undefined): void {
  chosenAgent = name || undefined;
}

export function getChosenAgent(): string | undefined {
  return chosenAgent;
}

export function handoffConfig(scope?: vscode.ConfigurationScope): HandoffConfig {
  const cfg = vscode.workspace.getConfiguration(SECTION, scope);
  const out: Record<string, unknown> = {};
  for (const key of CONFIG_KEYS) {
    const value = setting(cfg, key);
    if (value !== null && value !== undefined && value !== '') {
      out[key] = plain(value);
    }
  }
  if (chosenAgent) {
    out.agent = chosenAgent; // the workspace's choice wins over the `handoff.agent` setting
  }
  const autoTrigger = cfg.get<unknown>('todo.autoTrigger');
  if (typeof autoTrigger === 'boolean') {
    out.todo = { autoTrigger };
  }
  const idleMinutes = cfg.get<unknown>('daemon.idleMinutes');
  if (typeof idleMinutes === 'number') {
    out.daemon = { idleMinutes };
  }
  const poolSize = cfg.get<unknown>('pool.size');
  if (typeof poolSize === 'number') {
    out.pool = { size: poolSize };
  }
  const worktree: Record<string, unknown> = {};
  for (const key of ['include', 'setup']) {
    const value = setting(cfg, `worktree.${key}`);
    if (value !== null && value !== undefined && value !== '') {
      worktree[key] = plain(value);
    }
  }
  if (Object.keys(worktree).length) {
    out.worktree = worktree;
  }
  const ray: Record<string, unknown> = {};
  for (const key of ['address', 'numCpus', 'memoryMb', 'runtimeEnv']) {
    const value = setting(cfg, `ray.${key}`);
    if (value !== null && value !== undefined && value !== '') {
      ray[key] = plain(value);
    }
  }
  if (Object.keys(ray).length) {
    out.ray = ray;
  }
  return out as HandoffConfig;
}

/** True when a change needs a server restart (the command line), not just a config push. */
export function affectsServerCommand(e: vscode.ConfigurationChangeEvent): boolean {
  return e.affectsConfiguration(`${SECTION}.server`);
}

function plain(value: unknown): unknown {
  // Settings objects are read-only proxies; the wire wants plain JSON.
  return typeof value === 'object' ? JSON.parse(JSON.stringify(value)) : value;
}

function expandHome(p: string): string {
  if (p === '~' || p.startsWith('~/')) {
    return (process.env.HOME ?? '') + p.slice(1);
  }
  return p;
}
