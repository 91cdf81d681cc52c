"""What-if (diagnosis, not part of the suite): how much do built-in agents stall an event loop?

The built-in agent calls ``litellm.acompletion`` on the server's event loop. This measures the lag
of an asyncio loop (a ticker sleeping 5 ms and timing how late it wakes; the same loop that would
answer the editor) while ``--agents`` agents talk to the scripted model on 127.0.0.1, each with a
conversation that grows by one ``write_file`` of ~1.7 KB a step, as in the latency benchmark:

- ``none``: no agent (the floor),
- ``async``: Handoff's own ``LiteLLMModel.complete`` (``await litellm.acompletion`` on the loop),
- ``thread``: the same request with ``litellm.completion`` in a worker thread
  (``anyio.to_thread.run_sync``), cost computed there too,
- ``process``: the ``async`` agents in a child process (as if the server ran built-in agents in an
  agent-host process and only relayed their progress).

    python -m bench.whatif_litellm [--agents 8] [--seconds 20] [--delay 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import anyio

from .common import OUT, ROOT, fresh_dir, pct, wait_until
from .model_server import CONTENT


async def _ticker(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append((time.perf_counter() - t0 - 0.005) * 1000)


async def _agent(mode: str, url: str, stop: asyncio.Event, counter: list[int]) -> None:
    from handoff.agent.backends.model import LiteLLMModel, import_litellm
    from handoff.agent.backends.tools import TOOL_SCHEMAS

    litellm = import_litellm()
    model = LiteLLMModel("openai/scripted-model", url, "sk-bench-not-a-secret")
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a benchmark."},
                                      {"role": "user", "content": "Write files."}]

    def blocking() -> dict[str, Any]:
        response = litellm.completion(model="openai/scripted-model", messages=messages, tools=TOOL_SCHEMAS,
                                      api_base=url, api_key="sk-bench-not-a-secret", timeout=60,
                                      num_retries=0, max_retries=0)
        try:
            litellm.completion_cost(completion_response=response)
        except Exception:
            pass
        msg = response.choices[0].message
        return {"role": "assistant", "content": msg.content,
                "tool_calls": [{"id": c.id, "type": "function",
                                "function": {"name": c.function.name, "arguments": c.function.arguments}}
                               for c in msg.tool_calls or []]}

    while not stop.is_set():
        if mode == "async":
            message = (await model.complete(messages, TOOL_SCHEMAS)).message
        else:
            message = await anyio.to_thread.run_sync(blocking)
        counter[0] += 1
        messages.append(message)
        for call in message.get("tool_calls") or []:
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": f"wrote {len(CONTENT)} bytes"})


async def _mode(mode: str, url: str, agents: int, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    lags: list[float] = []
    counter = [0]
    child = None
    if mode == "process":
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.whatif_litellm", "--child", url, "--agents", str(agents),
            "--seconds", str(seconds), cwd=ROOT, stdout=asyncio.subprocess.PIPE)
        await child.stdout.readline()  # "ready": litellm imported there
    tasks = [asyncio.create_task(_ticker(stop, lags))]
    if mode not in ("none", "process"):
        tasks += [asyncio.create_task(_agent(mode, url, stop, counter)) for _ in range(agents)]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    if child is not None:
        out, _ = await child.communicate()
        counter[0] = int(out.decode().split()[-1])
    return {"mode": mode, "completions": counter[0], "lag_p50_ms": pct(lags, 50), "lag_p99_ms": pct(lags, 99),
            "lag_max_ms": max(lags), "ticks": len(lags)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--delay", type=float, default=0.5)
    p.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:  # the ``process`` mode's agents: run, then print how many completions
        async def child() -> int:
            from handoff.agent.backends.model import import_litellm

            import_litellm()
            print("ready", flush=True)
            stop, counter = asyncio.Event(), [0]
            tasks = [asyncio.create_task(_agent("async", args.child, stop, counter)) for _ in range(args.agents)]
            await asyncio.sleep(args.seconds)
            stop.set()
            await asyncio.gather(*tasks)
            return counter[0]

        print(asyncio.run(child()))
        return 0
    work = fresh_dir(OUT / "whatif-litellm")
    port_file = work / "port"
    model = subprocess.Popen([sys.executable, "-m", "bench.model_server", "--port-file", str(port_file),
                              "--stop-file", str(work / "never"), "--delay", str(args.delay)],
                             cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        from handoff.agent.backends.model import import_litellm

        import_litellm()  # not measured: the import is the ramp's problem, not this one's
        asyncio.run(wait_until(port_file.exists, 30, "the model server"))
        url = f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
        results = []
        for mode in ("none", "async", "thread", "process", "async", "thread", "process"):
            r = asyncio.run(_mode(mode, url, args.agents, args.seconds))
            results.append(r)
            print(json.dumps(r), flush=True)
        (work / "results.json").write_text(json.dumps(results, indent=2))
    finally:
        model.terminate()
        model.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
