"""Continuous batching and cancellation through HTTP, with the async `openai` client.

- 32 simultaneous greedy streams (4 prompts x 8) each get the text their prompt gets alone
  (`LLM.chat` with nothing else running), and the engine ran more than one request in a step.
- 16 clients that hang up mid-stream (plus 2 non-streaming ones that time out) are aborted:
  afterwards no request is in flight, the KV cache is empty, and new requests are answered.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx

from rocmforge.sampling_params import SamplingParams

PROMPTS = ["Name a color.", "What is 2 + 2?", "Say hello in French.", "Name a planet."]
MAX_TOKENS = 6


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.e+-]+)$", text, re.M)
    assert m, f"{name} missing from /metrics"
    return float(m.group(1))


def test_32_concurrent_streams_match_alone(server):
    import openai

    sp = SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS)
    alone = {
        p: server.reference(lambda p=p: server.llm.chat([{"role": "user", "content": p}], sp))[0]
        for p in PROMPTS
    }
    running_seen: list[float] = []

    async def one(client, prompt):
        stream = await client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": prompt}],
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
        )
        parts, finish = [], None
        async for ch in stream:
            if ch.choices:
                parts.append(ch.choices[0].delta.content or "")
                finish = ch.choices[0].finish_reason or finish
        return prompt, "".join(parts), finish

    async def sample_metrics(stop: asyncio.Event):
        async with httpx.AsyncClient() as h:
            while not stop.is_set():
                text = (await h.get(f"{server.base_url}/metrics")).text
                running_seen.append(_metric(text, "rocmforge_num_requests_running"))
                await asyncio.sleep(0.05)

    async def main():
        client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=600)
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_metrics(stop))
        results = await asyncio.gather(*(one(client, PROMPTS[i % 4]) for i in range(32)))
        stop.set()
        await sampler
        await client.close()
        return results

    results = asyncio.run(main())
    assert len(results) == 32
    for prompt, text, finish in results:
        ref = alone[prompt].outputs[0]
        assert (text, finish) == (ref.text, ref.finish_reason), prompt
    text = httpx.get(f"{server.base_url}/metrics").text
    assert _metric(text, "rocmforge_max_num_requests_running") > 1
    assert max(running_seen) > 1, running_seen


def _wait_idle(server, timeout: float = 120.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = server.runtime.engine.stats
        if server.runtime.engine.num_inflight == 0 and st.running == 0 and st.kv_usage == 0.0:
            return
        time.sleep(0.1)
    raise AssertionError(
        f"the server did not drain: {server.runtime.engine.stats}, "
        f"in flight {server.runtime.engine.num_inflight}"
    )


def test_disconnects_abort_and_free_kv(server):
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell me a long story."}],
        "max_tokens": 300,
        "temperature": 0,
        "ignore_eos": True,
    }

    async def hang_up_streaming(client: httpx.AsyncClient):
        async with client.stream(
            "POST", f"{server.base_url}/v1/chat/completions", json={**body, "stream": True}
        ) as r:
            assert r.status_code == 200
            n = 0
            async for line in r.aiter_lines():
                n += line.startswith("data: ")
                if n >= 3:  # role chunk + 2 content chunks: now hang up
                    return True
        return False

    async def hang_up_waiting():
        async with httpx.AsyncClient(timeout=1.5) as c:
            try:
                await c.post(f"{server.base_url}/v1/chat/completions", json=body)
            except httpx.TimeoutException:
                return True
        return False

    async def main():
        clients = [httpx.AsyncClient(timeout=300) for _ in range(16)]
        got = await asyncio.gather(
            *(hang_up_streaming(c) for c in clients), hang_up_waiting(), hang_up_waiting()
        )
        for c in clients:
            await c.aclose()
        return got

    assert all(asyncio.run(main()))
    _wait_idle(server)
    text = httpx.get(f"{server.base_url}/metrics").text
    assert _metric(text, "rocmforge_kv_cache_usage_perc") == 0.0
    assert _metric(text, "rocmforge_num_requests_running") == 0.0
    aborted = re.search(
        r'^rocmforge_request_success_total\{(?=[^}]*finished_reason="abort")[^}]*\} (\S+)$', text, re.M
    )
    assert aborted and float(aborted.group(1)) >= 18
    r = server.client().completions.create(model="smollm2", prompt="1, 2, 3,", max_tokens=2, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 2
