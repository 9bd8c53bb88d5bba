"""What API clients are told (issue 10): an upstream's own 4xx answer in a whole OpenAI envelope
(Anthropic's left as Anthropic wrote it), a malformed Authorization header named as such, a
stream cut mid-answer in plain words, and an unlisted Host pointed at ALLOWED_HOSTS."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest
import requests

from tests.relay_setup import chat, post, routed, sdk

KEY = "sk-upstream-secret"  # the channel key of tests.factories.make_channel
ENVELOPE = {"message", "type", "param", "code"}


class RawUpstream:
    """An upstream that answers every POST with one status and body, as written."""

    def __init__(self, status: int, body: bytes, content_type="application/json"):
        answer = (status, body, content_type)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(answer[0])
                self.send_header("Content-Type", answer[2])
                self.send_header("Content-Length", str(len(answer[1])))
                self.end_headers()
                self.wfile.write(answer[1])

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def raw_upstream():
    started = []

    def start(status, body):
        upstream = RawUpstream(
            status, body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        started.append(upstream)
        return upstream

    yield start
    for upstream in started:
        upstream.stop()


# --- 1. an upstream's own 4xx answer, in a whole OpenAI envelope ---


def test_an_upstream_envelope_missing_param_is_filled_in(live_server, fake_upstream):
    # The fake upstream's OpenAI errors carry message, type and code, but no param.
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(status=400, error_message=f"Bad max_tokens for key {KEY}")
    with pytest.raises(openai.BadRequestError) as excinfo:
        chat(sdk(live_server, key))
    error = excinfo.value.response.json()["error"]
    assert set(error) >= ENVELOPE
    assert error["param"] is None and error["type"] == "upstream"  # what it said is kept
    assert excinfo.value.body["message"].startswith("Bad max_tokens for key")
    assert KEY not in excinfo.value.response.text  # the channel key stays scrubbed


@pytest.mark.parametrize(
    "body, said",
    [
        # vLLM and others: a flat error object
        (
            {
                "object": "error",
                "message": f"max_tokens too large ({KEY})",
                "type": "BadRequestError",
                "param": "max_tokens",
                "code": 400,
            },
            "max_tokens too large",
        ),
        ({"error": f"context length exceeded for {KEY}"}, "context length exceeded"),
        ({"detail": "Model not found"}, "Model not found"),
        ({"error": {"code": "model_not_found"}}, "The upstream refused the request (HTTP 400)"),
        ([1, 2], "The upstream refused the request (HTTP 400): [1, 2]"),
    ],
)
def test_an_upstream_error_that_is_not_an_envelope_is_wrapped_in_one(
    live_server, raw_upstream, body, said
):
    upstream = raw_upstream(400, body)
    _, key, _ = routed(upstream)
    with pytest.raises(openai.BadRequestError) as excinfo:
        chat(sdk(live_server, key))
    error = excinfo.value.response.json()["error"]
    assert set(error) >= ENVELOPE
    assert said in error["message"] and said in str(excinfo.value)
    assert isinstance(error["type"], str)
    assert KEY not in excinfo.value.response.text
    if isinstance(body, dict) and body.get("param"):
        assert error["param"] == "max_tokens" and error["code"] == 400


def test_a_whole_upstream_envelope_passes_byte_for_byte(live_server, raw_upstream):
    body = (
        b'{"error": {"message": "No.", "type": "invalid_request_error", "param": "n", "code": "x"}}'
    )
    _, key, _ = routed(raw_upstream(422, body))
    with pytest.raises(openai.UnprocessableEntityError) as excinfo:
        chat(sdk(live_server, key))
    assert excinfo.value.response.content == body


def test_an_anthropic_upstream_error_is_left_as_anthropic_wrote_it(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream, kind="anthropic")
    fake_upstream.configure(status=400, error_message="messages: at least one message")
    client = anthropic.Anthropic(api_key=key, base_url=live_server.url, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as excinfo:
        client.messages.create(
            model="gpt-4o-mini", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert excinfo.value.response.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "messages: at least one message"},
    }


# --- 2. malformed Authorization, a stream cut mid-answer, an unlisted Host ---


@pytest.mark.parametrize(
    "header, said",
    [
        ("Basic dXNlcjpwYXNz", "got a Basic credential"),
        ("Bearer\t{key}", "separated by a tab"),
        ("{key}", "without the `Bearer ` scheme"),
        ("Bearer{key}", "no space between `Bearer` and the key"),
    ],
)
def test_a_malformed_authorization_header_is_named(live_server, fake_upstream, header, said):
    _, key, _ = routed(fake_upstream)
    response = post(
        live_server,
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": header.format(key=key)},
    )
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "invalid_api_key"
    assert error["message"].startswith("Expected `Authorization: Bearer <key>`")
    assert said in error["message"]
    assert "didn't provide" not in error["message"] and key not in error["message"]


def test_no_authorization_at_all_still_says_no_key(live_server, db):
    response = post(live_server, "/v1/chat/completions", json={})
    assert response.status_code == 401
    assert "You didn't provide an API key" in response.json()["error"]["message"]


def test_a_stream_cut_mid_answer_is_told_in_plain_words(live_server, fake_upstream):
    _, key, _ = routed(fake_upstream)
    fake_upstream.configure(drop_after=2)
    with pytest.raises(openai.APIError) as excinfo:
        list(chat(sdk(live_server, key), stream=True))
    message = str(excinfo.value)
    assert "the upstream closed the connection mid-answer" in message
    for repr_words in ("IncompleteRead", "Connection broken", "InvalidChunkLength", "("):
        assert repr_words not in message


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_an_unlisted_host_names_the_setting(live_server, db, path):
    response = requests.post(
        f"{live_server.url}{path}", json={}, headers={"Host": "api.example.org"}, timeout=10
    )
    assert response.status_code == 400
    body = response.json()
    error = body["error"]
    assert "ALLOWED_HOSTS" in error["message"] and "api.example.org" in error["message"]
    if path == "/v1/messages":
        assert body["type"] == "error"
    else:
        assert set(error) == ENVELOPE and error["code"] == "host_not_allowed"
