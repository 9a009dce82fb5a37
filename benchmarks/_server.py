"""The scripted OpenAI-compatible HTTP server the benchmarks talk to.

It is the test suite's `FakeOpenAI` (tests/support/fake_openai.py), imported, not
copied: one implementation of the fake API, so what the benchmarks measure is
what the tests check. `tests/` is not an installed package, hence the sys.path
entry below (the same one tests/conftest.py makes).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

_TESTS_DIR = Path(__file__).resolve().parents[1] / "tests"
if str(_TESTS_DIR) not in sys.path:
    sys.path.insert(0, str(_TESTS_DIR))

from support.fake_openai import FakeOpenAI, RecordedCall, Reply, words  # noqa: E402,F401  (words: the token count)
from support.flows import route  # noqa: E402  ('plan', 'node:<id>', 'synthesis', 'replan')
from support import fake_openai as _fake_openai  # noqa: E402

# TCP_NODELAY on the fake server's sockets, as real API servers set it (uvicorn does). Without
# it, its two writes per response (headers, then body) meet the client's delayed ACK: ~40 ms
# of Nagle stall on every call, the same for every executor, which hid the per-hop dispatch
# cost (benchmarks/dispatch.py) under a constant. Set here, for the benchmarks' process only.
_fake_openai._Handler.disable_nagle_algorithm = True

__all__ = ["FakeOpenAI", "RecordedCall", "Reply", "call_tokens", "latency_server", "reset_server", "route", "words"]

_FILLER = (
    "the analysis finds that the proposed step is feasible within the stated limits and "
    "that its inputs are consistent with the goal so the next task can build on this result "
).split()



def result_text(key: str, n_chars: int) -> str:
    """A deterministic node result of about `n_chars` characters that names its node."""
    head = f"result of {key}:"
    out, i = [head], 0
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(_FILLER[i % len(_FILLER)])
        i += 1
    return " ".join(out)


def latency_server(latency: float, result_chars: int = 0) -> FakeOpenAI:
    """A started server answering every chat call after `latency` seconds.

    Node answers are `result of node:<id>` (padded to `result_chars` characters
    when given); calls are keyed by `route` so they can be counted per node.
    """

    def respond(body: dict) -> Reply:
        key = route(body)
        content = result_text(key, result_chars) if result_chars else f"result of {key}"
        return Reply(content=content, delay=latency)

    server = FakeOpenAI(respond, key_fn=route).start()
    server.bench_responder = respond  # type: ignore[attr-defined]
    return server


def reset_server(server: FakeOpenAI) -> None:
    """Forget recorded calls (and scripts) but keep answering as `latency_server` made it."""
    server.reset()
    server.set_default(server.bench_responder)  # type: ignore[attr-defined]


def call_tokens(call: RecordedCall, reply_for: Callable[[str], str]) -> int:
    """Prompt + completion tokens of a recorded call, counted as the server counts them."""
    messages = call.body.get("messages") or []
    prompt = sum(words(m.get("content")) for m in messages if isinstance(m, dict))
    return prompt + words(reply_for(call.key or ""))
