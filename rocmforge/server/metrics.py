"""Prometheus metrics for GET /metrics; the AsyncEngine's observer (called from the engine thread).

Names follow vLLM's with a `rocmforge_` prefix; units are in the names (seconds, tokens, a 0..1 fraction).
Each server has its own CollectorRegistry, so several apps in one process do not collide.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
_ITL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0)
_E2E_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model_name: str):
        self.registry = r = CollectorRegistry()
        lab = {"labelnames": ["model_name"], "registry": r}
        self.running = Gauge("rocmforge_num_requests_running", "Requests in the running batch", **lab)
        self.waiting = Gauge("rocmforge_num_requests_waiting", "Requests queued, not yet running", **lab)
        self.max_running = Gauge("rocmforge_max_num_requests_running",
                                 "Most requests seen running in one engine step", **lab)  # fmt: skip
        self.kv_usage = Gauge(
            "rocmforge_kv_cache_usage_perc", "Fraction of KV cache blocks in use (0..1)", **lab
        )
        self.steps = Gauge("rocmforge_engine_steps", "Engine steps run since start", **lab)
        self.prompt_tokens = Counter("rocmforge_prompt_tokens", "Prompt tokens of admitted requests", **lab)
        self.generation_tokens = Counter("rocmforge_generation_tokens", "Generated tokens", **lab)
        self.requests = Counter("rocmforge_request_success", "Finished requests by finish reason",
                                labelnames=["model_name", "finished_reason"], registry=r)  # fmt: skip
        self.ttft = Histogram("rocmforge_time_to_first_token_seconds", "Arrival to first token",
                              buckets=_TTFT_BUCKETS, **lab)  # fmt: skip
        self.itl = Histogram("rocmforge_inter_token_latency_seconds", "Time between two output steps",
                             buckets=_ITL_BUCKETS, **lab)  # fmt: skip
        self.e2e = Histogram("rocmforge_e2e_request_latency_seconds", "Arrival to last token",
                             buckets=_E2E_BUCKETS, **lab)  # fmt: skip
        self.model_name = model_name

    # ---- the AsyncEngine observer ---------------------------------------------------------------
    def on_added(self, num_prompt_tokens: int) -> None:
        self.prompt_tokens.labels(self.model_name).inc(num_prompt_tokens)

    def on_generated(self, n: int) -> None:
        self.generation_tokens.labels(self.model_name).inc(n)

    def on_first_token(self, seconds: float) -> None:
        self.ttft.labels(self.model_name).observe(seconds)

    def on_inter_token(self, seconds: float) -> None:
        self.itl.labels(self.model_name).observe(seconds)

    def on_finished(self, reason: str, e2e_s: float) -> None:
        self.requests.labels(self.model_name, reason).inc()
        self.e2e.labels(self.model_name).observe(e2e_s)

    def on_stats(self, stats) -> None:
        m = self.model_name
        self.running.labels(m).set(stats.running)
        self.waiting.labels(m).set(stats.waiting)
        self.max_running.labels(m).set(stats.max_running)
        self.kv_usage.labels(m).set(stats.kv_usage)
        self.steps.labels(m).set(stats.steps)

    def render(self) -> bytes:
        return generate_latest(self.registry)
