"""The built-in agent: a tool-calling loop over a :class:`Model`, confined to the worktree.

``step = act(query())`` until the model calls ``finish``; steps, cost and wall time are
limited by the configuration and a breach raises :class:`LimitReached` naming the limit.
Every message is recorded as it happens, so the transcript survives any ending.
"""

from __future__ import annotations

import json
from typing import Any

import anyio

from .. import prompts
from ..config import Config
from .base import AgentContext, AgentError, LimitReached, Outcome
from .model import LiteLLMModel, Model
from .tools import TOOL_NAMES, TOOL_SCHEMAS, ToolError, Workspace, check_args

COMMAND_TIMEOUT_S = 300.0
REQUEST_TIMEOUT_S = 120.0
MAX_GARBAGE = 3  # unusable replies in a row before giving up


def model_from_config(config: Config) -> Model:
    if not config.model:
        raise AgentError(
            "no model configured: set HANDOFF_MODEL or `model` in .handoff.toml / "
            "[tool.handoff] / the editor settings (a litellm model string, e.g. "
            "`openai/gpt-4o-mini`)"
        )
    return LiteLLMModel(
        config.model,
        config.apiBase,
        config.apiKey,
        timeout_s=min(REQUEST_TIMEOUT_S, config.timeoutS),
    )


class BuiltinBackend:
    name = "builtin"

    def __init__(self, model: Model | None = None) -> None:
        self._model = model

    async def run(self, ctx: AgentContext) -> Outcome:
        cfg = ctx.config
        model = self._model or model_from_config(cfg)
        workspace = Workspace(
            ctx.worktree,
            test_command=cfg.testCommand,
            command_timeout_s=min(COMMAND_TIMEOUT_S, cfg.timeoutS),
            policy=cfg.commandPolicy,
            pass_env=cfg.passEnv,
        )
        run = _Run(ctx, model, workspace)
        try:
            with anyio.move_on_after(cfg.timeoutS) as scope:
                summary = await run.loop()
        except AgentError as exc:
            exc.steps, exc.cost_usd = run.steps, run.cost
            raise
        if scope.cancelled_caught:
            raise LimitReached(
                f"time limit reached (timeoutS = {cfg.timeoutS:g})",
                steps=run.steps,
                cost_usd=run.cost,
            )
        return Outcome(summary, run.steps, run.cost, run.messages)


class _Run:
    """The state of one run: the conversation (without the system prompt) and the counters."""

    def __init__(self, ctx: AgentContext, model: Model, workspace: Workspace) -> None:
        self.ctx, self.model, self.workspace, self.cfg = ctx, model, workspace, ctx.config
        self.system = {"role": "system", "content": prompts.system_prompt(self.cfg.testCommand)}
        self.messages: list[dict[str, Any]] = _close_dangling(list(ctx.history))
        self.steps, self.cost, self.garbage, self.nudged = 0, 0.0, 0, False

    async def loop(self) -> str:
        self.add({"role": "user", "content": self.ctx.brief or self.ctx.instruction})
        while True:
            if self.steps >= self.cfg.maxSteps:
                raise LimitReached(f"step limit reached (maxSteps = {self.cfg.maxSteps})")
            if self.cost >= self.cfg.maxCostUsd:
                raise LimitReached(
                    f"cost limit reached (maxCostUsd = {self.cfg.maxCostUsd:g}; "
                    f"spent ${self.cost:.4f})"
                )
            reply = await self.model.complete([self.system, *self.messages], TOOL_SCHEMAS)
            self.steps += 1
            self.cost += reply.cost_usd
            summary = await self.act(reply.message, reply.cost_usd)
            if summary is not None:
                return summary

    async def act(self, message: dict[str, Any], cost: float) -> str | None:
        """Run the reply's tool calls; the summary when the model is done, else None."""
        calls = [_parse(c) for c in message.get("tool_calls") or []]
        text = (message.get("content") or "").strip()
        stored: dict[str, Any] = {
            "role": "assistant",
            "content": message.get("content") or (None if calls else ""),
        }
        if calls:
            stored["tool_calls"] = [c["stored"] for c in calls]
        self.add(stored, costUsd=cost, raw=message if any(c["problem"] for c in calls) else None)
        if not calls:  # text only: nudge once, then take the text as the summary
            self.report("replied without a tool call" if text else "empty reply")
            if text and self.nudged:
                return text
            self.nudged = bool(text)
            self.add({"role": "user", "content": prompts.NUDGE if text else prompts.EMPTY_REPLY})
            self.count_garbage(usable=bool(text))
            return None
        self.nudged = False
        summary: str | None = None
        for call in calls:
            if summary is not None:
                result = prompts.SKIPPED_AFTER_FINISH
            elif call["problem"]:
                result = prompts.BAD_ARGUMENTS.format(name=call["name"], problem=call["problem"])
            elif call["name"] == "finish":
                try:
                    summary = (
                        check_args("finish", call["args"])["summary"].strip() or "(no summary)"
                    )
                    result = "finished"
                except ToolError as exc:
                    result = f"error: {exc}"
            else:
                result = await self.dispatch(call["name"], call["args"])
            self.add({"role": "tool", "tool_call_id": call["stored"]["id"], "content": result})
            self.report(_describe(call))
        self.count_garbage(usable=any(not c["problem"] for c in calls))
        return summary

    def count_garbage(self, *, usable: bool) -> None:
        self.garbage = 0 if usable else self.garbage + 1
        if self.garbage >= MAX_GARBAGE:
            raise AgentError(
                f"the model returned unusable output ({self.garbage} replies in a row "
                "were empty or had malformed tool calls)"
            )

    async def dispatch(self, name: str, args: dict[str, Any]) -> str:
        try:
            return await anyio.to_thread.run_sync(
                self.workspace.dispatch, name, args, abandon_on_cancel=True
            )
        except anyio.get_cancelled_exc_class():
            self.workspace.kill_running()  # a cancelled session leaves no process behind
            raise

    def add(self, message: dict[str, Any], **extra: Any) -> None:
        self.messages.append(message)
        event = {"type": "message", "step": self.steps, "message": message}
        self.ctx.record({**event, **{k: v for k, v in extra.items() if v is not None}})

    def report(self, action: str) -> None:
        self.ctx.progress(action, self.steps, self.cost)


def _parse(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call's name, decoded arguments and problem (None when usable)."""
    fn = call.get("function") or {}
    name, raw = str(fn.get("name") or ""), fn.get("arguments")
    problem, args = None, raw
    if isinstance(raw, str):
        try:
            args = json.loads(raw or "{}")
        except json.JSONDecodeError as exc:
            problem = f"invalid JSON: {exc.msg} at position {exc.pos}"
    if problem is None and not isinstance(args, dict):
        problem = f"got {type(args).__name__}"
    if problem is None and name not in TOOL_NAMES:
        problem = f"there is no tool {name!r}; the tools are: {', '.join(sorted(TOOL_NAMES))}"
    # Providers may reject malformed arguments when the conversation is sent back.
    arguments = "{}" if problem else raw if isinstance(raw, str) else json.dumps(args)
    stored = {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }
    return {"name": name, "args": args, "problem": problem, "stored": stored}


def _describe(call: dict[str, Any]) -> str:
    args = call["args"] if isinstance(call["args"], dict) else {}
    detail = args.get("path") or args.get("command") or args.get("pattern") or ""
    return f"{call['name']} {str(detail)[:80]}".strip()


def _close_dangling(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer tool calls left without a result (an interrupted run), as providers require."""
    answered = {m.get("tool_call_id") for m in messages if m.get("role") == "tool"}
    out: list[dict[str, Any]] = []
    for m in messages:
        out.append(m)
        calls = m.get("tool_calls") if m.get("role") == "assistant" else None
        for c in calls or []:
            if c.get("id") not in answered:
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": c.get("id"),
                        "content": "not run: the session was interrupted",
                    }
                )
    return out
