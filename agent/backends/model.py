"""The model seam: one chat completion with tools, as an OpenAI-style assistant message.

:class:`LiteLLMModel` reaches any provider through litellm. litellm is imported lazily, in a
worker thread, once per process (its import takes seconds and must not block the event
loop), with stdout pointed at stderr meanwhile: under a stdio language server stdout
belongs to JSON-RPC. Retries are ours, not litellm's or the OpenAI SDK's: transient
failures (rate limits, 5xx, connection errors, timeouts) back off and retry; anything that
retrying cannot fix aborts at once with an :class:`AgentError` that says what to check:
litellm's ``AuthenticationError``, ``PermissionDeniedError``, ``NotFoundError``,
``ContextWindowExceededError``, ``BadRequestError`` and ``UnprocessableEntityError``, and a
missing key (which litellm reports as an ``InternalServerError``).

A local OpenAI-compatible server (``model = "openai/<name>"`` with ``apiBase``: llama.cpp,
vLLM, LM Studio) needs no key: with none set (no ``apiKey``, no ``OPENAI_API_KEY``) the request
carries a placeholder, since the OpenAI SDK refuses to build a client without one. A server
that does want a key answers 401, which aborts and names ``HANDOFF_API_KEY``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import json
import os
import random
import re
import sys
import threading
from types import ModuleType
from typing import Any, Protocol

import anyio

from .base import AgentError

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 8.0

# "litellm.NotFoundError: NotFoundError: OpenAIException - " says nothing to a developer
_NOISE = re.compile(r"^(litellm\.\w+: )?(\w+Error: )?(\w+Exception - )?")

# The OpenAI SDK's "no key at all" error, which litellm wraps as an InternalServerError (500)
_MISSING_KEY = re.compile(r"Missing credentials|api_key client option must be set", re.I)
# Providers that speak the OpenAI API through the OpenAI SDK, whose client demands a key
_OPENAI_SDK = frozenset({"openai", "text-completion-openai", "custom_openai"})
KEYLESS = "no-key"  # what a keyless local server gets as its key

_litellm: ModuleType | None = None
_litellm_lock = threading.Lock()


@dataclasses.dataclass
class ModelReply:
    message: dict[str, Any]  # {"role": "assistant", "content": str | None, "tool_calls"?: [...]}
    cost_usd: float = 0.0


class Model(Protocol):
    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelReply: ...


def import_litellm() -> ModuleType:
    """Import and quiet litellm; blocking, so call it from a worker thread."""
    global _litellm
    with _litellm_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
            saved, sys.stdout = sys.stdout, sys.stderr
            try:
                mod: Any = importlib.import_module("litellm")  # its settings are module globals
            finally:
                sys.stdout = saved
            mod.suppress_debug_info = True  # no "Give Feedback / Get Help" prints on errors
            mod.set_verbose = False
            mod.num_retries = 0
            if hasattr(mod, "telemetry"):
                mod.telemetry = False
            _litellm = mod
    return _litellm


async def load_litellm() -> ModuleType:
    if _litellm is not None:
        return _litellm
    return await anyio.to_thread.run_sync(import_litellm)


class LiteLLMModel:
    def __init__(
        self,
        model: str,
        api_base: str | None = None,
        api_key: str | None = None,
        *,
        retries: int = 3,
        timeout_s: float = 120.0,
    ) -> None:
        self.model = model
        self.api_base = api_base
        self._api_key = api_key
        self.retries = retries
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"LiteLLMModel({self.model!r}, api_base={self.api_base!r})"

    async def complete(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> ModelReply:
        litellm = await load_litellm()
        retryable = (
            litellm.RateLimitError,
            litellm.InternalServerError,
            litellm.ServiceUnavailableError,
            litellm.BadGatewayError,
            litellm.APIConnectionError,
            litellm.Timeout,
        )
        attempt = 0
        while True:
            try:
                # litellm's request building, JSON and cost code is CPU work: it runs in a
                # worker thread, so the language server's event loop never waits on it.
                response, cost = await anyio.to_thread.run_sync(
                    functools.partial(self._complete_blocking, litellm, messages, tools),
                    abandon_on_cancel=True,
                )
                break
            except retryable as exc:
                if _MISSING_KEY.search(str(exc)):
                    raise AgentError(
                        f"the model {self.model!r} needs an API key: set HANDOFF_API_KEY "
                        "(or apiKey)"
                    ) from None
                if attempt >= self.retries:
                    raise AgentError(
                        f"the model is unavailable after {attempt + 1} attempts: "
                        f"{self._describe(exc)}"
                    ) from None
                await anyio.sleep(_delay(attempt, exc))
                attempt += 1
            except litellm.AuthenticationError as exc:
                raise AgentError(
                    f"model authentication failed ({_status(exc, 401)}): "
                    "check HANDOFF_API_KEY / apiKey"
                ) from None
            except litellm.PermissionDeniedError as exc:
                raise AgentError(
                    f"the model provider refused access ({_status(exc, 403)}): "
                    f"{self._describe(exc)}"
                ) from None
            except litellm.NotFoundError as exc:
                raise AgentError(
                    f"model not found: {self.model!r} ({self._describe(exc)}); "
                    "check HANDOFF_MODEL / model and apiBase"
                ) from None
            except litellm.ContextWindowExceededError as exc:
                raise AgentError(
                    f"the conversation no longer fits the model's context window: "
                    f"{self._describe(exc)}"
                ) from None
            except (litellm.BadRequestError, litellm.UnprocessableEntityError) as exc:
                raise AgentError(f"the model rejected the request: {self._describe(exc)}") from None
            except litellm.APIError as exc:  # litellm's catch-all; 5xx is worth a retry
                if _MISSING_KEY.search(str(exc)):
                    raise AgentError(
                        f"the model {self.model!r} needs an API key: set HANDOFF_API_KEY "
                        "(or apiKey)"
                    ) from None
                if _status(exc, 0) < 500 or attempt >= self.retries:
                    raise AgentError(f"model error: {self._describe(exc)}") from None
                await anyio.sleep(_delay(attempt, exc))
                attempt += 1
        return ModelReply(_assistant_message(response), cost)

    def _complete_blocking(
        self, litellm: ModuleType, messages: list[dict[str, Any]], tools: list[dict[str, Any]]
    ) -> tuple[Any, float]:
        response = litellm.completion(
            model=self.model,
            messages=messages,
            tools=tools,
            api_base=self.api_base,
            api_key=self._api_key or self._keyless(litellm),
            timeout=self.timeout_s,
            num_retries=0,
            max_retries=0,
        )
        return response, _cost(litellm, response)

    def _keyless(self, litellm: ModuleType) -> str | None:
        """The placeholder key for an OpenAI-compatible server at ``apiBase`` when no key is set
        anywhere; None (litellm finds the provider's key itself) otherwise."""
        if not self.api_base or os.environ.get("OPENAI_API_KEY"):
            return None
        try:
            provider = litellm.get_llm_provider(self.model, api_base=self.api_base)[1]
        except litellm.BadRequestError:  # a model string litellm cannot place
            return None
        return KEYLESS if provider in _OPENAI_SDK else None

    def _describe(self, exc: BaseException) -> str:
        """The error's message, short and without the API key."""
        text = _NOISE.sub("", str(getattr(exc, "message", "") or exc).strip())
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text[:500] or type(exc).__name__


def _status(exc: BaseException, default: int) -> int:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else default


def _delay(attempt: int, exc: BaseException) -> float:
    """Exponential backoff with jitter; a small Retry-After from the server wins."""
    headers = getattr(exc, "headers", None) or getattr(
        getattr(exc, "response", None), "headers", None
    )
    try:
        retry_after: float | None = float(headers.get("retry-after")) if headers else None
    except (TypeError, ValueError):
        retry_after = None
    if retry_after is not None and 0 <= retry_after <= BACKOFF_CAP_S:
        return retry_after
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt) * random.uniform(0.8, 1.0)


def _assistant_message(response: Any) -> dict[str, Any]:
    """The first choice as a plain OpenAI assistant message dict."""
    choices = getattr(response, "choices", None) or []
    msg = getattr(choices[0], "message", None) if choices else None
    out: dict[str, Any] = {"role": "assistant", "content": getattr(msg, "content", None)}
    calls = []
    for i, tc in enumerate(getattr(msg, "tool_calls", None) or []):
        fn = getattr(tc, "function", None)
        args = getattr(fn, "arguments", None)
        calls.append(
            {
                "id": getattr(tc, "id", None) or f"call_{i}",
                "type": "function",
                "function": {
                    "name": getattr(fn, "name", None) or "",
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    if calls:
        out["tool_calls"] = calls
    return out


def _cost(litellm: ModuleType, response: Any) -> float:
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:  # litellm raises assorted errors for models without a known price
        return 0.0
