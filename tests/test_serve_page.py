"""The chat page at / in headless Chromium: type a message, watch the answer stream in.

Uses the system's Chromium (Debian's `chromium` package, which .ci/run installs) driven by Playwright, so no
browser is downloaded. The screenshot goes to tests/artifacts/serve_page.png (ignored by git).
"""

from pathlib import Path

import pytest

pytest.importorskip("uvicorn")
sync_api = pytest.importorskip("playwright.sync_api")

from openformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from openformers.serving import BatchScheduler  # noqa: E402
from openformers.serving.app import BackgroundServer, create_app  # noqa: E402
from openformers.serving.protocol import Limits  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOT = Path(__file__).parent / "artifacts" / "serve_page.png"


@pytest.fixture(scope="module")
def server_url(smollm2_gguf):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package (apt-get install chromium) to run it")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    model = AutoModelForCausalLM.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)
    scheduler = BatchScheduler(model, tokenizer)
    with BackgroundServer(create_app(scheduler, "SmolLM2-135M-Instruct", limits=Limits(default_max_tokens=40))) as url:
        yield url
    scheduler.close()


def test_the_chat_page_streams_the_answer(server_url):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 600})
            page.goto(server_url)
            sync_api.expect(page.locator("#model")).to_have_text("SmolLM2-135M-Instruct")
            page.fill("#input", "What is the capital of France?")
            page.press("#input", "Enter")
            sync_api.expect(page.locator(".message.user")).to_have_text("What is the capital of France?")
            # Streaming: part of the answer shows while the page still waits for the rest (Send is disabled).
            page.wait_for_function(
                "document.querySelector('.message.assistant')?.textContent.length > 0"
                " && document.querySelector('#send').disabled",
                timeout=60_000,
            )
            partial = page.text_content(".message.assistant")
            sync_api.expect(page.locator("#send")).to_be_enabled(timeout=120_000)
            answer = page.text_content(".message.assistant")
            errors = page.locator(".message.error").count()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT))
        finally:
            browser.close()
    assert errors == 0
    assert answer.strip() and answer.startswith(partial) and len(answer) > len(partial)
