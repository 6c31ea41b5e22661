"""The Gradio page in a real browser: Debian's chromium driven by Playwright, on 127.0.0.1.

Upload a clip, ask, wait for the streamed answer and compare it with the HTTP API's greedy answer; a text file
uploaded as audio shows one short line (the API's message). A screenshot is saved for a human to look at.
Skips (with the reason) only when chromium or Playwright is missing; ``scripts/setup-system.sh`` installs it.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest

from test_serve import _serving, _wav_bytes, model, model_dir  # noqa: F401  (fixtures)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="chromium is not installed (scripts/setup-system.sh installs it)"
)


def test_page_streams_the_greedy_answer_in_chromium(model, tmp_path):  # noqa: F811
    pytest.importorskip("gradio")
    sync_api = pytest.importorskip("playwright.sync_api")
    from sslalm.audio import AudioError, load_audio
    from sslalm.generation_settings import generation_defaults
    from sslalm.serve import ModelService, ServeLimits
    from sslalm.serve.app import build_app, launch

    wav = tmp_path / "clip.wav"
    wav.write_bytes(_wav_bytes(1.0, seed=4))
    junk = tmp_path / "notes.wav"
    junk.write_bytes(b"these are my notes, not audio\n" * 20)
    with pytest.raises(AudioError) as audio_error:
        load_audio(junk.read_bytes())
    question = "What can be inferred from the audio?"
    with _serving(model) as (http, _, _):  # the API's answer for the same clip and settings
        r = http.post(
            "/v1/ask",
            files={"audio": ("clip.wav", wav.read_bytes(), "audio/wav")},
            data={"question": question, "max_new_tokens": "12", "temperature": "0"},
        )
        expected = r.json()["answer"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = ModelService(model, ServeLimits())
    demo = build_app(service)
    shots = os.environ.get("SSLALM_SCREENSHOTS", str(tmp_path))
    try:
        launch(demo, service.limits, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
            try:
                page = browser.new_page(viewport={"width": 1200, "height": 900})
                page.set_default_timeout(30_000)
                page.goto(f"http://127.0.0.1:{port}/")
                page.on("pageerror", lambda e: print("page error:", e))
                page.get_by_text("generation settings").click()
                assert page.locator("#seed textarea, #seed input").first.input_value() == ""  # empty = random
                defaults = generation_defaults()  # the page starts where the API and `sslalm ask` start
                assert page.locator("#max_new_tokens input[type=number]").input_value() == str(
                    defaults["max_new_tokens"]
                )
                assert (
                    float(page.locator("#temperature input[type=number]").input_value())
                    == defaults["temperature"]
                )
                page.locator("#max_new_tokens input[type=number]").fill("12")
                page.locator("#max_new_tokens input[type=number]").press("Enter")
                page.locator("#temperature input[type=number]").fill("0")
                page.locator("#temperature input[type=number]").press("Enter")
                for field, value in (
                    ("max_new_tokens", "12"),
                    ("temperature", "0"),
                ):  # reached the app's state
                    page.wait_for_function(
                        f"() => document.querySelector('#{field} input[type=range]').value === '{value}'"
                    )
                page.locator("#audio input[type=file]").set_input_files(str(wav))
                page.locator("#audio audio, #audio .waveform-container, #audio button").first.wait_for()
                page.locator("#question textarea").fill(question)
                service.batcher.pause()  # hold the request in the queue: Ask must stay disabled meanwhile
                page.locator("#ask").click()
                page.wait_for_function("() => document.querySelector('#ask').disabled")
                service.batcher.resume()
                page.wait_for_function(
                    "() => document.querySelector('#details') && "
                    "document.querySelector('#details').innerText.includes('tokens (')"
                )
                answer = page.locator("#answer textarea").input_value()
                page.screenshot(path=os.path.join(shots, "browser-answer.png"), full_page=True)
                assert answer == expected
                # enabled again after the answer, by the page's next event: waited for (slow when loaded)
                page.wait_for_function("() => !document.querySelector('#ask').disabled")

                page.reload()  # a text file named .wav: one short line, no Gradio internals
                page.locator("#audio input[type=file]").set_input_files(str(junk))
                page.locator("#ask").click()
                toast = page.locator(".toast-body").first
                toast.wait_for()
                text = toast.inner_text()
                page.screenshot(path=os.path.join(shots, "browser-not-audio.png"), full_page=True)
                assert str(audio_error.value) in text
                assert "ffmpeg" not in text and "Traceback" not in text and "/tmp" not in text
            finally:
                browser.close()
    finally:
        demo.close()
        service.close()
