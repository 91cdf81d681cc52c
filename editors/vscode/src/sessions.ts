// The Session record of docs/DESIGN.md and the client-side list the server keeps current through
// `handoff/sessions` (the whole list every time).
import * as vscode from 'vscode';

export type SessionState =
  | 'queued'
  | 'running'
  | 'ready'
  | 'applied'
  | 'failed'
  | 'cancelled'
  | 'discarded'
  | 'interrupted';

export interface LspRange {
  start: { line: number; character: number };
  end: { line: number; character: number };
}

export interface Session {
  id: string;
  title: string;
  state: SessionState;
  uri?: string | null;
  range?: LspRange | null;
  agent?: string;
  createdAt?: string;
  updatedAt?: string;
  steps?: number;
  costUsd?: number;
  summary?: string;
  filesChanged?: string[];
  error?: string | null;
  /** What may be done with it now (the server's one table): apply, applyHunks, reject, show,
   * followUp, cancel, discard, resume. */
  actions?: string[];
  /** Changes left to review (hunks), while it is ready. */
  hunks?: number;
  instruction?: string;
  resultCommit?: string;
}

/** States that still ask something of the developer (shown in the status bar). */
export const LIVE_STATES: ReadonlySet<SessionState> = new Set(['queued', 'running', 'ready', 'failed', 'interrupted']);
export const ACTIVE_STATES: ReadonlySet<SessionState> = new Set(['queued', 'running']);

export class SessionStore implements vscode.Disposable {
  private sessions: Session[] = [];
  private readonly emitter = new vscode.EventEmitter<Session[]>();
  readonly onDidChange = this.emitter.event;

  all(): Session[] {
    return this.sessions;
  }

  get(id: string): Session | undefined {
    return this.sessions.find((s) => s.id === id);
  }

  live(): Session[] {
    return this.sessions.filter((s) => LIVE_STATES.has(s.state));
  }

  replace(sessions: Session[]): void {
    this.sessions = sessions.filter((s) => s && typeof s.id === 'string');
    this.emitter.fire(this.sessions);
  }

  dispose(): void {
    this.emitter.dispose();
  }
}

export function age(iso: string | undefined, now: number = Date.now()): string {
  const t = iso ? Date.parse(iso) : NaN;
  if (Number.isNaN(t)) {
    return '';
  }
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) {
    return `${s}s ago`;
  }
  if (s < 3600) {
    return `${Math.round(s / 60)} min ago`;
  }
  if (s < 86400) {
    return `${Math.round(s / 3600)} h ago`;
  }
  return `${Math.round(s / 86400)} d ago`;
}

export function cost(usd: number | undefined): string {
  return `$${(usd ?? 0).toFixed(usd && usd < 0.01 ? 4 : 2)}`;
}

/** "2 running, 1 ready" for the given sessions; "" when none is live. */
export function summarize(sessions: Session[]): string {
  const counts = new Map<string, number>();
  for (const s of sessions) {
    if (LIVE_STATES.has(s.state)) {
      counts.set(s.state, (counts.get(s.state) ?? 0) + 1);
    }
  }
  const order: SessionState[] = ['running', 'queued', 'ready', 'failed', 'interrupted'];
  return order
    .filter((state) => counts.get(state))
    .map((state) => `${counts.get(state)} ${state}`)
    .join(', ');
}
