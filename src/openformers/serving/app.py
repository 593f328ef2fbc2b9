"""The OpenAI-compatible HTTP server: a Starlette app over a `BatchScheduler`.

Endpoints: POST /v1/chat/completions and /v1/completions (JSON, or server-sent events with `stream: true`),
GET /v1/models, GET /health, and the chat page at /. Each request is checked (protocol.py), tokenized (in a
thread, or for a long prompt in a process killed when its client leaves: tokenizing.py), and its choices
are submitted to the scheduler, whose worker thread decodes every request in one batch; updates come back to
the event loop through `call_soon_threadsafe`, so neither side ever waits on the other. When a client goes away
its requests are cancelled and leave the batch at the next step.
"""

import asyncio
import contextlib
import functools
import hmac
import json
import socket
import threading
import time
from dataclasses import replace
from importlib import resources
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, StreamingResponse
from starlette.routing import Route

from . import protocol
from .protocol import APIError, Limits, ParsedRequest
from .scheduler import BatchScheduler, SamplingOptions, Update
from .tokenizing import TokenizingProcesses, can_fork, prompt_ids


def create_app(scheduler: BatchScheduler, model_id: str, *, api_key: str | None = None,
               limits: Limits | None = None, allowed_hosts: list[str] | None = None,
               tokenizing: TokenizingProcesses | None = None) -> Starlette:
    """The ASGI app serving `scheduler`'s model under the name `model_id`.

    With `api_key`, every /v1 request needs `Authorization: Bearer <api_key>`. With `allowed_hosts` (host names,
    without ports), a request whose Host header, or whose Origin header when it has one, names another host is
    refused with 403: a web page elsewhere cannot then reach a server on loopback through a browser, by its own
    origin or by a DNS name rebound to 127.0.0.1. The app does not own the scheduler: close it after the server stops.

    Long prompts are tokenized by `tokenizing`, started with the scheduler's tokenizer before the model loaded, where
    it forks cheaply; without one, the app starts its own at the first long prompt (where fork exists). The app
    stops it when the server stops.
    """
    server = _Server(scheduler, model_id, api_key, limits or Limits(), allowed_hosts, tokenizing)
    routes = [
        Route("/", server.page),
        Route("/health", server.health),
        Route("/v1/models", server.models),
        Route("/v1/models/{model:path}", server.model),
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
    ]
    handlers = {APIError: _api_error, HTTPException: _http_error, Exception: _server_error}
    return Starlette(routes=routes, exception_handlers=handlers, middleware=[Middleware(_HostCheck, server=server)],
                     lifespan=server.lifespan)


# Prompts longer than this are tokenized one at a time in a child process (see _Server._tokenize); shorter ones
# at once in a thread.
LONG_PROMPT_CHARACTERS = 32_768

# The names of this machine's loopback addresses, which a server bound to one of them answers to by default.
LOOPBACK_HOSTS = ["localhost", "127.0.0.1", "::1"]


class _HostCheck:
    """Refuses, before any route runs, a request whose Host or Origin names a host the server does not serve."""

    def __init__(self, app, server: "_Server"):
        self.app, self.server = app, server

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and self.server.allowed_hosts is not None:
            headers = Headers(scope=scope)
            for name in ("host", "origin"):
                value = headers.get(name)
                if (value is not None or name == "host") and _host_name(value or "") not in self.server.allowed_hosts:
                    error = APIError(403, f"The {name.title()} header {value!r} names a host this server does not "
                                          f"serve (allowed: {', '.join(sorted(self.server.allowed_hosts))}).",
                                     type="forbidden_error")
                    await JSONResponse(error.body(), status_code=403)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def _host_name(value: str) -> str:
    """The host of a Host header ("localhost:8000") or an Origin ("http://[::1]:8000"), lowercased, without port."""
    host = urlsplit(value if "//" in value else f"//{value}").hostname
    return (host or "").lower()


async def _api_error(request: Request, error: APIError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status)


async def _http_error(request: Request, error: HTTPException) -> JSONResponse:
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    message = f"{request.method} {request.url.path}: {error.detail}"
    return JSONResponse(APIError(error.status_code, message, type=kind).body(), status_code=error.status_code)


async def _server_error(request: Request, error: Exception) -> JSONResponse:
    # The details (a traceback) go to the server's log, where Starlette reports the exception; not to the client.
    body = APIError(500, f"The server failed ({type(error).__name__}); its log has the details.",
                    type="server_error").body()
    return JSONResponse(body, status_code=500)


class _Server:
    def __init__(self, scheduler: BatchScheduler, model_id: str, api_key: str | None, limits: Limits,
                 allowed_hosts: list[str] | None, tokenizing: TokenizingProcesses | None):
        self.scheduler, self.tokenizer = scheduler, scheduler.tokenizer
        self.model_id, self.api_key, self.limits = model_id, api_key, limits
        self.allowed_hosts = None if allowed_hosts is None else {host.strip("[]").lower() for host in allowed_hosts}
        self.created = protocol.now()
        self.tokenizing_turn = asyncio.Semaphore(1)
        self.tokenizing = tokenizing

    @contextlib.asynccontextmanager
    async def lifespan(self, app):
        try:
            yield
        finally:
            if self.tokenizing is not None:
                self.tokenizing.close()

    # -- simple endpoints ---------------------------------------------------------------------------------------

    async def page(self, request: Request) -> HTMLResponse:
        return HTMLResponse(_page_html())

    async def health(self, request: Request) -> JSONResponse:
        s = self.scheduler
        return JSONResponse({"status": "ok", "model": self.model_id, "active": s.active, "waiting": s.waiting,
                             "decode_steps": s.decode_steps})

    async def models(self, request: Request) -> JSONResponse:
        self._check_key(request)
        return JSONResponse({"object": "list", "data": [self._model_card()]})

    async def model(self, request: Request) -> JSONResponse:
        self._check_key(request)
        if request.path_params["model"] != self.model_id:
            raise APIError(404, f"The model {request.path_params['model']!r} does not exist; this server serves "
                                f"{self.model_id!r}.", param="model", code="model_not_found")
        return JSONResponse(self._model_card())

    def _model_card(self) -> dict:
        return {"id": self.model_id, "object": "model", "created": self.created, "owned_by": "openformers"}

    # -- generation ---------------------------------------------------------------------------------------------

    async def chat_completions(self, request: Request):
        self._check_key(request)
        parsed = protocol.parse_chat_request(await self._read_json(request), self.limits)
        self._check_model(parsed)
        self._check_room(parsed)
        if self.tokenizer.chat_template is None:
            raise APIError(400, f"{self.model_id} has no chat template; use /v1/completions with it instead.")
        lengths = [sum(len(message["content"]) for message in messages) for messages in parsed.prompts]
        prompts = await self._tokenize(request, "chat", parsed.prompts, lengths, "messages")
        return await self._answer(request, parsed, prompts, "chat")

    async def completions(self, request: Request):
        self._check_key(request)
        parsed = protocol.parse_completion_request(await self._read_json(request), self.limits)
        self._check_model(parsed)
        self._check_room(parsed)
        lengths = [len(prompt) for prompt in parsed.prompts if isinstance(prompt, str)]
        prompts = await self._tokenize(request, "completion", parsed.prompts, lengths, "prompt")
        return await self._answer(request, parsed, prompts, "completion")

    async def _tokenize(self, request: Request, kind: str, prompts: list, lengths: list[int], param: str):
        """The ids of `prompts` (tokenizing.prompt_ids; their texts have these `lengths` in characters), once each
        text is known to fit the context (`_check_prompt_length`). A short text (most requests) takes milliseconds
        and is tokenized at once in a thread. Long texts go one request at a time, not at all once the client has
        gone, and where fork exists in a child process that is killed the moment the client leaves
        (tokenizing.py): a thread would hold the GIL the decode worker needs for seconds and could not be stopped."""
        for length in lengths:
            self._check_prompt_length(length, param)

        def work() -> list[list[int]]:
            return [prompt_ids(self.tokenizer, kind, prompt) for prompt in prompts]

        if sum(lengths) <= LONG_PROMPT_CHARACTERS:
            return await run_in_threadpool(work)
        # Listening while waiting, not a `request.is_disconnected()` at the turn: after a body chunk over 64 KB
        # uvicorn stops reading the connection until the app receives, so a close is seen only after a receive.
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            async with self.tokenizing_turn:
                if gone.done():
                    raise APIError(499, "The client closed the connection.")
                if not can_fork():
                    return await run_in_threadpool(work)
                if self.tokenizing is None:
                    self.tokenizing = TokenizingProcesses(self.tokenizer)
                return await self.tokenizing.tokenize(kind, prompts, gone)
        finally:
            gone.cancel()

    async def _answer(self, request: Request, parsed: ParsedRequest, prompts: list[list[int]], kind: str):
        jobs = []  # (choice index, prompt ids, options), the n choices of each prompt in turn
        for p, ids in enumerate(prompts):
            max_tokens = self._max_tokens(parsed, ids, "messages" if kind == "chat" else "prompt")
            self._check_cache_bytes(len(ids) + max_tokens, "max_tokens" if parsed.max_tokens else None)
            options = SamplingOptions(max_tokens, stop=parsed.stop, **parsed.options)
            for j in range(parsed.n):
                seed = None if parsed.seed is None else parsed.seed + j
                jobs.append((p * parsed.n + j, ids, replace(options, seed=seed)))
        echoes = [self._echo(parsed, prompt, ids) for prompt, ids in zip(parsed.prompts, prompts)]
        answer = _Answer(self.scheduler, jobs, kind, parsed.model, sum(len(ids) for ids in prompts),
                         [echoes[i // parsed.n] for i in range(len(jobs))])
        if parsed.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(answer.events(parsed.include_usage), media_type="text/event-stream",
                                     headers=headers)
        return JSONResponse(await answer.whole(request))

    def _max_tokens(self, parsed: ParsedRequest, ids: list[int], prompt_param: str) -> int:
        if self.scheduler.context_length is None:  # a model without a context bound (Mamba's)
            return self.limits.default_max_tokens if parsed.max_tokens is None else parsed.max_tokens
        room = self.scheduler.context_length - len(ids)
        if room < 1:
            raise APIError(400, f"The prompt has {len(ids)} tokens, which fills the model's context of "
                                f"{self.scheduler.context_length} tokens: shorten it.",
                           param=prompt_param, code="context_length_exceeded")
        if parsed.max_tokens is None:
            return min(self.limits.default_max_tokens, room)
        if parsed.max_tokens > room:
            raise APIError(400, f"The prompt has {len(ids)} tokens and max_tokens is {parsed.max_tokens}, more than "
                                f"the model's context of {self.scheduler.context_length} tokens: lower max_tokens "
                                f"to at most {room}.", param="max_tokens", code="context_length_exceeded")
        return parsed.max_tokens

    def _check_cache_bytes(self, positions: int, param: str | None) -> None:
        most = self.scheduler.max_request_tokens
        if most is not None and positions > most:
            raise APIError(400, f"The prompt and max_tokens come to {positions} tokens; this server keeps at most "
                                f"{most} tokens of cache for a request: shorten the prompt or lower max_tokens.",
                           param=param, code="context_length_exceeded")

    def _echo(self, parsed: ParsedRequest, prompt, ids: list[int]) -> str:
        if not parsed.echo:
            return ""
        return prompt if isinstance(prompt, str) else self.tokenizer.decode(ids)

    # -- request checks -----------------------------------------------------------------------------------------

    def _check_key(self, request: Request) -> None:
        if self.api_key is None:
            return
        header = request.headers.get("authorization", "")
        if not header:
            raise APIError(401, "No API key was provided: send the header 'Authorization: Bearer YOUR_KEY'.",
                           code="invalid_api_key")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), self.api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    def _check_room(self, parsed: ParsedRequest) -> None:
        """Answer 429 rather than queue without end: each choice is a request of the scheduler."""
        queued = self.scheduler.active + self.scheduler.waiting
        if queued + len(parsed.prompts) * parsed.n > self.limits.max_requests:
            raise APIError(429, f"The server is busy ({queued} requests running or waiting, at most "
                                f"{self.limits.max_requests}); retry shortly.", type="rate_limit_error",
                           code="server_busy")

    def _check_prompt_length(self, characters: int, param: str) -> None:
        """Refuse, before tokenizing it, a text too long to fit the context whatever its tokens: no token covers
        more characters than the longest one in the vocabulary. Tokenizing a megabyte costs seconds of CPU that
        a client could make the server spend again and again only to be told its prompt does not fit."""
        context = self.scheduler.context_length
        if context is not None and characters > context * self._longest_token:
            raise APIError(400, f"The {param} has {characters} characters, more than the model's context of {context} "
                                "tokens can hold: shorten it.", param=param, code="context_length_exceeded")

    @functools.cached_property
    def _longest_token(self) -> int:
        # Vocabulary strings are at least as long as the text they stand for: byte-level ones spell each byte
        # as one character, SentencePiece's "▁" is one space, WordPiece adds "##".
        return max(map(len, self.tokenizer.get_vocab()), default=1)

    def _check_model(self, parsed: ParsedRequest) -> None:
        if parsed.model != self.model_id:
            raise APIError(400, f"The model {parsed.model!r} does not exist; this server serves {self.model_id!r} "
                                "(see GET /v1/models).", param="model", code="model_not_found")

    async def _read_json(self, request: Request) -> dict:
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise APIError(413, f"The request body has {declared} bytes; at most {limit} are accepted.")
        body = bytearray()

        async def read():
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:
                    raise APIError(413, f"The request body is over {limit} bytes; at most {limit} are accepted.")

        try:
            await asyncio.wait_for(read(), self.limits.body_timeout)
        except asyncio.TimeoutError:  # the builtin TimeoutError only from Python 3.11 on
            raise APIError(408, f"The request body did not arrive within {self.limits.body_timeout:g} s "
                                f"({len(body)} bytes came).", code="request_timeout") from None
        try:
            value = json.loads(body)
        except ValueError as error:
            raise APIError(400, f"The request body is not valid JSON: {error}.")
        except RecursionError:
            raise APIError(400, "The request body nests JSON arrays or objects too deeply to be a request.")
        if not isinstance(value, dict):
            raise APIError(400, f"The request body must be a JSON object, got {type(value).__name__}.")
        return value


class _Answer:
    """The choices of one HTTP request, decoded by the scheduler and gathered on the event loop."""

    def __init__(self, scheduler: BatchScheduler, jobs: list, kind: str, model: str, prompt_tokens: int,
                 echoes: list[str]):
        self.scheduler, self.jobs, self.kind, self.model = scheduler, jobs, kind, model
        self.prompt_tokens, self.echoes = prompt_tokens, echoes
        self.id = protocol.new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.updates: asyncio.Queue = asyncio.Queue()
        self.requests = []

    def _submit(self) -> None:
        loop = asyncio.get_running_loop()
        for index, ids, options in self.jobs:
            deliver = functools.partial(_deliver, loop, self.updates, index)
            self.requests.append(self.scheduler.submit(ids, options, deliver))

    def _cancel(self) -> None:
        for request in self.requests:
            request.cancel()

    async def whole(self, http_request: Request) -> dict:
        """Wait for every choice; a client that disconnects meanwhile cancels them."""
        self._submit()
        collecting = asyncio.ensure_future(self._collect())
        disconnect = asyncio.ensure_future(_disconnected(http_request))
        try:
            await asyncio.wait({collecting, disconnect}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            disconnect.cancel()
            collecting.cancel()
            self._cancel()
        if not collecting.done():
            raise APIError(499, "The client closed the connection.")
        return collecting.result()

    async def _collect(self) -> dict:
        texts, reasons, completion_tokens = [[e] for e in self.echoes], [None] * len(self.jobs), 0
        while None in reasons:
            index, update = await self.updates.get()
            texts[index].append(update.text)
            if update.finish_reason == "error":
                raise APIError(500, f"Decoding failed: {update.error}", type="server_error")
            if update.finish_reason is not None:
                reasons[index] = update.finish_reason
                completion_tokens += update.completion_tokens
        choices = [("".join(parts), reason) for parts, reason in zip(texts, reasons)]
        counts = protocol.usage(self.prompt_tokens, completion_tokens)
        if self.kind == "chat":
            return protocol.chat_response(self.id, self.model, choices, counts)
        return protocol.completion_response(self.id, self.model, choices, counts)

    async def events(self, include_usage: bool):
        """The server-sent events of a streamed answer, ending with `data: [DONE]`."""
        self._submit()
        try:
            for index in range(len(self.jobs)):
                if self.kind == "chat":
                    yield _sse(protocol.chat_chunk(self.id, self.model, index, {"role": "assistant", "content": ""}))
                elif self.echoes[index]:
                    yield _sse(protocol.completion_chunk(self.id, self.model, index, self.echoes[index]))
            running, completion_tokens = len(self.jobs), 0
            while running:
                index, update = await self.updates.get()
                if update.finish_reason == "error":
                    yield _sse(APIError(500, f"Decoding failed: {update.error}", type="server_error").body())
                    return
                if update.text or update.finish_reason is not None:
                    yield _sse(self._chunk(index, update))
                if update.finish_reason is not None:
                    running -= 1
                    completion_tokens += update.completion_tokens
            if include_usage:
                kind = "chat.completion.chunk" if self.kind == "chat" else "text_completion"
                counts = protocol.usage(self.prompt_tokens, completion_tokens)
                yield _sse(protocol.usage_chunk(self.id, self.model, kind, counts))
            yield "data: [DONE]\n\n"
        finally:
            self._cancel()  # runs also when the client disconnects and Starlette cancels the stream

    def _chunk(self, index: int, update: Update) -> dict:
        if self.kind == "chat":
            delta = {"content": update.text} if update.text else {}
            return protocol.chat_chunk(self.id, self.model, index, delta, update.finish_reason)
        return protocol.completion_chunk(self.id, self.model, index, update.text, update.finish_reason)


def _deliver(loop: asyncio.AbstractEventLoop, updates: asyncio.Queue, index: int, update: Update) -> None:
    """Called in the decode thread: hand the update to the event loop without waiting."""
    loop.call_soon_threadsafe(updates.put_nowait, (index, update))


async def _disconnected(http_request: Request) -> None:
    """Return when the client closes the connection (its body is read, so nothing else can arrive)."""
    while (await http_request.receive())["type"] != "http.disconnect":
        pass


def _sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def uvicorn_config(app, *, header_timeout: float = 10.0, **options):
    """uvicorn's Config for `app`, with connections that take longer than `header_timeout` seconds to send a
    request's headers closed (uvicorn itself waits for them without end, so idle or trickling connections could
    pile up until the server has no room left)."""
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if not isinstance(header_timeout, (int, float)) or not header_timeout > 0:
        raise ValueError(f"header_timeout must be a positive number of seconds, got {header_timeout!r}.")

    class HeaderTimeoutProtocol(H11Protocol):
        """uvicorn's HTTP/1.1 protocol with a deadline for the headers of every request, the first and each one
        after a response; reading the body has its own deadline in the app."""

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_deadline()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:  # the headers are in
                self._deadline.cancel()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._start_deadline()

        def connection_lost(self, exc) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

        def _start_deadline(self) -> None:
            if getattr(self, "_deadline", None) is not None:
                self._deadline.cancel()
            self._deadline = self.loop.call_later(header_timeout, self._too_slow)

        def _too_slow(self) -> None:
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self.transport.close()

    return uvicorn.Config(app, http=HeaderTimeoutProtocol, **options)


class BackgroundServer:
    """Serves `app` with uvicorn from a thread, for tests, benchmarks and notebooks.

        with BackgroundServer(app) as url:   # e.g. "http://127.0.0.1:53411", a free port on loopback
            ...
    """

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, header_timeout: float = 10.0):
        import uvicorn

        self.socket = socket.create_server((host, port))
        self.url = "http://{}:{}".format(*self.socket.getsockname()[:2])
        config = uvicorn_config(app, header_timeout=header_timeout, log_level="warning", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"The server at {self.url} failed to start.")
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc_info) -> None:
        self.server.should_exit = True
        self.thread.join()
        self.socket.close()


@functools.cache
def _page_html() -> str:
    return resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
