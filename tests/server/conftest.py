"""One real server for the whole tests/server session: SmolLM2 on CPU behind uvicorn on 127.0.0.1.

The server runs in a thread of the test process on a free port; `Server.reference(fn)` runs fn in
the engine's own thread (between steps), so a test can call `LLM.generate` / `LLM.chat` on the very
engine the server uses, for an independent-of-HTTP reference.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass

import pytest

MAX_LEN = 384  # context of the test server (tokens): small prompts, few new tokens
KV_TOKENS = 8192


@dataclass
class Server:
    base_url: str  # http://127.0.0.1:PORT
    llm: object  # rocmforge.LLM (do not call it directly: use reference())
    runtime: object  # rocmforge.server.serving.Runtime

    def reference(self, fn, timeout: float = 600.0):
        """fn() run in the engine thread; its result."""
        return self.runtime.engine.run_in_engine(fn).result(timeout)

    def client(self, **kw):
        import openai

        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=600, **kw
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server():
    from rocmforge.hub import ModelNotFoundError, resolve_model

    try:
        resolve_model("smollm2")
    except ModelNotFoundError as e:
        pytest.skip(f"SmolLM2 GGUF not available: {e}")
    uvicorn = pytest.importorskip("uvicorn", reason="the server tests need uvicorn (pip install '.[server]')")
    from rocmforge import LLM
    from rocmforge.server.app import create_app

    llm = LLM("smollm2", device="cpu", max_model_len=MAX_LEN, kv_cache_tokens=KV_TOKENS, seed=0)
    app = create_app(llm, model_name="smollm2")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, name="test-uvicorn", daemon=True)
    th.start()
    t0 = time.monotonic()
    while not srv.started:
        if time.monotonic() - t0 > 60 or not th.is_alive():
            raise RuntimeError("the test server did not start within 60 s")
        time.sleep(0.05)
    yield Server(f"http://127.0.0.1:{port}", llm, app.state.runtime)
    srv.should_exit = True
    th.join(30)
