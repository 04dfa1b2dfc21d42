"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for testing LLM judges and
endpoint systems (`answering` serves both: a judge prompt gets a verdict, any other an answer).

It speaks HTTP (not a mock of the client), so retries, timeouts and dropped connections are
exercised through the real `openai` client. A *policy* decides every reply; failures can be
injected ahead of it. Typical use::

    from judge_server import JudgeServer, Reply, prefer_longer

    with JudgeServer(prefer_longer) as server:
        server.inject(Reply.rate_limited(), times=2)  # the next two requests get HTTP 429
        result = judge_pairs(qs, a, b, model="judge", base_url=server.base_url)
        assert server.request_count == 2 * len(qs) + 2

A policy is `Callable[[ChatRequest], Reply | str]`; a plain string is a normal 200 reply with that
message content. `paraphrasing` serves medsft.data.augment's paraphrase requests and their
same-meaning checks. `ChatRequest.pair()` recovers the question and both answers from the judge
prompt (the first user message; a label retry adds a `follow_up`), which delimits them as
`[Question]`, `[The Start of Assistant 1's Answer]` ... `[The End of Assistant 1's Answer]`, and
the same for Assistant 2 (or the packaged Chinese prompt's `[问题]`, `[助手1的回答开始]` ...).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BETTER = "Assistant 1 is better than Assistant 2"
WORSE = "Assistant 1 is worse than Assistant 2"
EQUAL = "Assistant 1 is equal to Assistant 2"

BETTER_ZH, WORSE_ZH, EQUAL_ZH = "助手1更好", "助手1更差", "两者相当"
"""The verdicts of the packaged Chinese prompt (medsft.metrics.judge.LABELS_ZH)."""

_PAIR_RES = [
    re.compile(
        r"\[Question\]\n(?P<question>.*?)\n\n"
        r"\[The Start of Assistant 1's Answer\]\n(?P<answer_1>.*?)\n\[The End of Assistant 1's Answer\]"
        r".*?"
        r"\[The Start of Assistant 2's Answer\]\n(?P<answer_2>.*?)\n\[The End of Assistant 2's Answer\]",
        re.DOTALL,
    ),
    re.compile(
        r"\[问题\]\n(?P<question>.*?)\n\n"
        r"\[助手1的回答开始\]\n(?P<answer_1>.*?)\n\[助手1的回答结束\]"
        r".*?"
        r"\[助手2的回答开始\]\n(?P<answer_2>.*?)\n\[助手2的回答结束\]",
        re.DOTALL,
    ),
]


@dataclass(frozen=True)
class ChatRequest:
    """One request as the server received it."""

    index: int
    """0-based arrival order, counting every request (injected failures included)."""
    path: str
    body: dict[str, Any]
    """The parsed JSON body; `{}` when it was not JSON."""
    authorization: str | None
    """The `Authorization` header, so tests can check which key was sent."""

    @property
    def model(self) -> str:
        """The `model` field of the request."""
        return str(self.body.get("model", ""))

    @property
    def prompt(self) -> str:
        """Content of the first user message: the judge prompt."""
        users = self._users()
        return users[0] if users else ""

    @property
    def question(self) -> str:
        """Content of the last user message: the question an endpoint system asks."""
        users = self._users()
        return users[-1] if users else ""

    @property
    def follow_up(self) -> str | None:
        """Content of the last user message when there are several (a label retry), else None."""
        users = self._users()
        return users[-1] if len(users) > 1 else None

    def _users(self) -> list[str]:
        messages = self.body.get("messages", [])
        return [str(m.get("content", "")) for m in messages if m.get("role") == "user"]

    def pair(self) -> tuple[str, str, str]:
        """(question, answer shown as Assistant 1, answer shown as Assistant 2) from the prompt."""
        match = next(filter(None, (r.search(self.prompt) for r in _PAIR_RES)), None)
        if match is None:
            raise ValueError("prompt does not delimit a question and two answers")
        return match["question"], match["answer_1"], match["answer_2"]


@dataclass(frozen=True)
class Reply:
    """What the server does with one request."""

    content: str | None = None
    """Assistant message content of a 200 `chat.completion`."""
    status: int = 200
    body: bytes | None = None
    """Raw response body, replacing the generated JSON (for malformed replies)."""
    content_type: str = "application/json"
    delay: float = 0.0
    """Seconds to wait before answering (longer than the client timeout -> a timeout)."""
    drop: bool = False
    """Close the connection without sending any HTTP response."""
    headers: dict[str, str] = field(default_factory=dict)
    prompt_tokens: int | None = None
    """`usage.prompt_tokens`; defaults to the number of characters in all messages."""
    completion_tokens: int | None = None
    """`usage.completion_tokens`; defaults to the number of characters in `content`."""
    finish_reason: str = "stop"
    """`finish_reason` of a 200 reply: `length` is a reply cut at the token limit."""
    reasoning: str | None = None
    """`reasoning_content` of the message: a think block a reasoning parser returned apart."""

    @classmethod
    def rate_limited(cls) -> Reply:
        """HTTP 429 with an OpenAI-style error body."""
        return cls(status=429, body=_error_body("Rate limit reached", "rate_limit_exceeded"))

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        """HTTP 5xx with an OpenAI-style error body."""
        return cls(status=status, body=_error_body("The server had an error", "server_error"))

    @classmethod
    def slow(cls, seconds: float, content: str = EQUAL) -> Reply:
        """A valid reply sent only after `seconds` (use more than the client's timeout)."""
        return cls(content=content, delay=seconds)

    @classmethod
    def garbage_json(cls) -> Reply:
        """HTTP 200 whose body claims to be JSON but is not."""
        return cls(body=b'{"id": "chatcmpl-broken", "choices": [', content_type="application/json")

    @classmethod
    def empty(cls) -> Reply:
        """HTTP 200, a well-formed chat completion whose message has no content."""
        return cls(content="")

    @classmethod
    def fastapi_error(cls, status: int, detail: str) -> Reply:
        """An HTTP error as FastAPI servers (`transformers serve`) send it: `{"detail": ...}`."""
        return cls(status=status, body=json.dumps({"detail": detail}).encode())

    @classmethod
    def cut(cls, content: str) -> Reply:
        """A reply cut at the token limit (`finish_reason: length`)."""
        return cls(content=content, finish_reason="length")

    @classmethod
    def dropped(cls) -> Reply:
        """The connection is closed before any response (a dropped connection)."""
        return cls(drop=True)


Policy = Callable[[ChatRequest], "Reply | str"]


def verdict_text(label: str, reasons: str = "Compared on accuracy and detail.") -> str:
    """A judge reply: `reasons`, then `label` on the last line."""
    return f"{reasons}\n\n{label}"


def judge_by(score: Callable[[str], float], *, chinese: bool = False) -> Policy:
    """Policy preferring the answer with the higher `score` (equal scores -> equal); `chinese`
    answers with reasons and a verdict in Chinese (`BETTER_ZH`, ...)."""
    better, worse, equal = (BETTER_ZH, WORSE_ZH, EQUAL_ZH) if chinese else (BETTER, WORSE, EQUAL)

    def policy(request: ChatRequest) -> str:
        _, first, second = request.pair()
        s1, s2 = score(first), score(second)
        label = better if s1 > s2 else worse if s1 < s2 else equal
        reasons = f"得分 {s1} 比 {s2}。" if chinese else f"Scores {s1} vs {s2}."
        return verdict_text(label, reasons)

    return policy


def prefer_first(request: ChatRequest) -> str:
    """Policy of a maximally position-biased judge: Assistant 1 always wins."""
    return verdict_text(BETTER, "The first answer is better.")


prefer_longer: Policy = judge_by(len)
"""Policy preferring the longer answer."""

prefer_longer_zh: Policy = judge_by(len, chinese=True)
"""Policy preferring the longer answer, replying in Chinese."""


def answer_to(question: str) -> str:
    """The answer `answering` gives: the same for the same question, different for others."""
    return f"回答：{question[:12]}。建议就医。"


def answering(judge: Policy = prefer_longer) -> Policy:
    """Policy of a server that answers questions (`answer_to`) and judges judge prompts."""

    def policy(request: ChatRequest) -> Reply | str:
        if any(r.search(request.prompt) for r in _PAIR_RES):
            return judge(request)
        return answer_to(request.question)

    return policy


_CHECK = re.compile(r"\n\n原问题：(?P<original>.*?)\n\n改写：(?P<paraphrase>.*)\Z", re.DOTALL)
_QUESTION = re.compile(r"\n\n问题：(?P<question>.*)\Z", re.DOTALL)


def paraphrase_of(question: str) -> str:
    """The paraphrase `paraphrasing` gives."""
    return "换个说法：" + question


def paraphrasing(
    verdict: Callable[[str], str] = lambda original: "相同",
    rewrite: Callable[[str], Reply | str] = paraphrase_of,
) -> Policy:
    """Policy of a server that paraphrases questions (`rewrite`, by default `paraphrase_of`) as
    medsft.data.augment's prompt asks, and answers its same-meaning checks with reasons and then
    `verdict(original question)` (相同, 不同, or anything else: an unclear reply), follow-ups
    asking for the verdict alone too."""

    def policy(request: ChatRequest) -> Reply | str:
        check = _CHECK.search(request.prompt)
        if check is not None:
            return f"理由：比较了两个问题。\n{verdict(check['original'])}"
        question = _QUESTION.search(request.prompt)
        if question is None:
            raise ValueError("neither a paraphrase request nor a same-meaning check")
        return rewrite(question["question"])

    return policy


def rejecting(param: str, message: str) -> Reply:
    """HTTP 400 as OpenAI sends it for a request setting a model does not take (e.g. GPT-5's
    `temperature` other than its default, or `max_tokens`)."""
    body = {
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": param,
            "code": "unsupported_parameter" if "parameter" in message else "unsupported_value",
        }
    }
    return Reply(status=400, body=json.dumps(body).encode())


def reasoning_model(request: ChatRequest) -> Reply | str:
    """Policy of a GPT-5-family endpoint: rejects `temperature` (unless 1) and `max_tokens` as
    OpenAI does, and otherwise judges like `prefer_longer`."""
    body = request.body
    if "max_tokens" in body:
        return rejecting(
            "max_tokens",
            "Unsupported parameter: 'max_tokens' is not supported with this model. Use "
            "'max_completion_tokens' instead.",
        )
    if body.get("temperature", 1) != 1:
        return rejecting(
            "temperature",
            f"Unsupported value: 'temperature' does not support {body['temperature']} with this "
            "model. Only the default (1) value is supported.",
        )
    return prefer_longer(request)


def _error_body(message: str, code: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": code, "code": code}}).encode()


# `/v1/models` entries as each kind of server lists a model (what clients tell them apart by).
_LISTED = {
    "openai": {"owned_by": "system"},
    "vllm": {"owned_by": "vllm", "root": "model", "max_model_len": 4096},
    "sglang": {"owned_by": "sglang", "root": "model", "max_model_len": 4096},
    "transformers": {"owned_by": "local", "status": {"value": "loaded"}},
}


class JudgeServer:
    """OpenAI-compatible `/v1/chat/completions` server on 127.0.0.1, in a background thread.

    Args:
        policy: decides the reply to each request not consumed by an injected failure.
        model: `model` reported in completions when the request names none, and listed.
        kind: the server `GET /v1/models` lists the model as (`openai`, `vllm`, `sglang`,
            `transformers`); None answers that GET with 404.
    """

    def __init__(
        self, policy: Policy = prefer_longer, *, model: str = "test-judge", kind: str | None = None
    ) -> None:
        self.policy = policy
        self.model = model
        self.kind = kind
        self.requests: list[ChatRequest] = []
        """Log of every POST received, in arrival order."""
        self.listings = 0
        """GET requests received (a client probing `/models`); not in `requests`."""
        self._injected: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> JudgeServer:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._httpd = _Server(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake delayed replies and release the port."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        assert self._thread is not None
        self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state -----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """`base_url` for the `openai` client, e.g. `http://127.0.0.1:54321/v1`."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def request_count(self) -> int:
        """Number of requests received so far."""
        with self._lock:
            return len(self.requests)

    def inject(self, reply: Reply, times: int = 1) -> None:
        """Serve `reply` to the next `times` requests, before the policy sees any."""
        with self._lock:
            self._injected.extend([reply] * times)

    def reset(self) -> None:
        """Forget logged requests and pending injected replies."""
        with self._lock:
            self.requests.clear()
            self._injected.clear()
            self.listings = 0

    # -- request handling ------------------------------------------------------------------
    def _decide(
        self, path: str, raw: bytes, authorization: str | None
    ) -> tuple[ChatRequest, Reply]:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        with self._lock:
            request = ChatRequest(len(self.requests), path, body, authorization)
            self.requests.append(request)
            injected = self._injected.popleft() if self._injected else None
        if injected is not None:
            return request, injected
        try:
            reply = self.policy(request)
        except Exception as exc:  # a broken policy should fail the test loudly, not hang it
            return request, Reply(status=500, body=_error_body(f"policy failed: {exc!r}", "test"))
        return request, Reply(content=reply) if isinstance(reply, str) else reply

    def _completion(self, request: ChatRequest, reply: Reply) -> bytes:
        content = reply.content or ""
        prompt_tokens = reply.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = sum(len(str(m.get("content", ""))) for m in request.body["messages"])
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = len(content)
        payload = {
            "id": f"chatcmpl-test-{request.index}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": reply.content,
                        **({"reasoning_content": reply.reasoning} if reply.reasoning else {}),
                    },
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }
        return json.dumps(payload, ensure_ascii=False).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs under a burst of concurrent clients, and
    # each drop costs the client a 1 s SYN retransmit.
    request_queue_size = 128


def _make_handler(server: JudgeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            with server._lock:
                server.listings += 1
            if server.kind is None or not self.path.rstrip("/").endswith("/models"):
                body, status = _error_body(f"no route {self.path}", "not_found"), 404
            else:
                listed = {"id": server.model, "object": "model", "created": 0}
                listed.update(_LISTED[server.kind])
                body, status = json.dumps({"object": "list", "data": [listed]}).encode(), 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request, reply = server._decide(self.path, raw, self.headers.get("Authorization"))
            # An interruptible wait, so stop() never waits for a reply that is sleeping.
            if reply.delay and server._stopping.wait(reply.delay):
                return
            if reply.drop:
                self.close_connection = True
                return
            if not self.path.rstrip("/").endswith("/chat/completions") and reply.body is None:
                body, status = _error_body(f"no route {self.path}", "not_found"), 404
            elif reply.body is not None:
                body, status = reply.body, reply.status
            else:
                body, status = server._completion(request, reply), reply.status
            try:
                self.send_response(status)
                self.send_header("Content-Type", reply.content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout) before we answered

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    return Handler
