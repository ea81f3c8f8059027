"""The OpenAI-compatible HTTP backend against a real chat-completions server on 127.0.0.1 (port 0, a thread): slow, broken and failing answers.

These tests hold on a loaded machine: an answer that must come gets LONG seconds, a slow answer never comes in time
(it waits for an event that is set when the server stops), waits between tries are recorded rather than timed, and a
time bound is checked with a margin of several times the configured timeout.
"""
import json, shutil, subprocess, sys, threading, time, warnings

import pytest

from vb_nb.prompts import (ChatCompletionsBackend, ChatServer, LLMError, PromptFallbackWarning, ToyDirector,
                           decompose, decompose_messages, main, make_backend, plan_prompts, refine)

CAPTION = "a striped orange star drifts to the left, then rises over green grass"
SEGMENTS = ["a striped orange star drifts to the left over green grass", "a striped orange star rises over green grass"]
MSGS = decompose_messages(CAPTION, 'star', 8)
LONG = 300.0         # seconds for an answer that must come (a starved process still answers within it; a hang still ends)
SHORT = 0.4          # seconds for a try that must time out: its answer never comes in time, whatever the load
CLI_TIMEOUT = 1800   # seconds for a command line run in a subprocess (it imports torch; a starved process is slow)


class Scripted(ChatServer):
    "A chat server whose answers follow a script: one entry per request (the last one repeats). 'slow' answers only once the server stops."
    def __init__(self, script, **kw):
        super().__init__(ToyDirector(), **kw); self.script = list(script)
        self.release, self.answered = threading.Event(), []          # answered: the numbers of the requests answered so far

    def stop(self):
        self.release.set(); super().stop()

    def respond(self, request):
        n = len(self.requests) - 1
        try: return self._respond(self.script[min(n, len(self.script) - 1)], request)
        finally: self.answered.append(n)

    def _respond(self, step, request):
        if step == 'ok': return super().respond(request)
        if step == 'slow': self.release.wait(LONG); return super().respond(request)
        if step == 'malformed': return 200, b'{"choices": [{"message": {"content": "a red ba'
        if step == 'not-a-completion': return 200, b'{"object": "error", "detail": "overloaded"}'
        if step == 'null-content': return 200, json.dumps({'choices': [{'message': {'role': 'assistant', 'content': None}}]}).encode()
        if step == 'think':
            text = '<think>The prompt has two stages.</think>\n```json\n' + json.dumps(SEGMENTS) + '\n```'
            return 200, json.dumps({'choices': [{'message': {'role': 'assistant', 'content': text}}]}).encode()
        if isinstance(step, int): return step, json.dumps({'error': {'message': f'status {step}'}}).encode()
        raise AssertionError(step)


def backend(srv, **kw):
    kw = {'timeout': LONG, 'retries': 1, 'backoff': 0.01, **kw}
    return ChatCompletionsBackend(srv.url, 'toy-llm', **kw)


class Tries(ChatCompletionsBackend):
    "A backend whose tries have their own timeouts (`timeouts`, the last one repeating): a short first try, patient retries."
    def __init__(self, url, timeouts, **kw):
        super().__init__(url, 'toy-llm', timeout=timeouts[0], **kw); self.timeouts, self.tries = list(timeouts), 0

    def _read(self, payload):
        self.timeout = self.timeouts[min(self.tries, len(self.timeouts) - 1)]; self.tries += 1
        self.client.timeout = self._httpx.Timeout(self.timeout)
        return super()._read(payload)


def test_round_trip_speaks_the_protocol():
    with Scripted(['ok']) as srv:
        answer = backend(srv, api_key='sk-test').complete(MSGS)
        assert json.loads(answer) == SEGMENTS
        req, head = srv.requests[0], srv.headers[0]
        assert req['model'] == 'toy-llm' and req['messages'] == MSGS and req['stream'] is False
        assert req['temperature'] == 0 and req['seed'] == 0 and req['max_tokens'] > 0
        assert head['Authorization'] == 'Bearer sk-test' and head['Content-Type'] == 'application/json'
        assert decompose(CAPTION, 'star', 8, backend(srv)) == SEGMENTS


def test_base_url_forms():
    with Scripted(['ok']) as srv:
        for url in (srv.url, srv.url + '/', srv.url + '/chat/completions'):
            assert json.loads(ChatCompletionsBackend(url, 'm', timeout=LONG).complete(MSGS)) == SEGMENTS
    for bad in ('localhost:11434', 'ftp://x/v1', ''):
        with pytest.raises(ValueError, match='http'): ChatCompletionsBackend(bad, 'm')
    with pytest.raises(ValueError, match='model'): ChatCompletionsBackend('http://127.0.0.1:1/v1', '')


def test_slow_answer_times_out_then_the_retry_succeeds():
    with Scripted(['slow', 'ok']) as srv:
        b = Tries(srv.url, [SHORT, LONG], retries=1, backoff=0.01)
        t0 = time.monotonic()
        assert json.loads(b.complete(MSGS)) == SEGMENTS
        took = time.monotonic() - t0
        assert len(srv.requests) == 2 and srv.answered == [1]                  # the retry answered; the slow answer never came
        assert took >= SHORT                                                    # the first try waited its timeout


def test_always_slow_raises_then_falls_back_with_a_warning():
    with Scripted(['slow']) as srv:
        with pytest.raises(LLMError, match=r'failed 2 time\(s\): no answer within 0.4 s \(x2\)'):
            backend(srv, timeout=SHORT).complete(MSGS)
        with pytest.warns(PromptFallbackWarning, match='no answer within'):
            plan = plan_prompts(CAPTION, 'star', 8, refine=backend(srv, timeout=SHORT, retries=0))
        assert plan.prompts == [CAPTION] and plan.source == 'original' and 'no answer within' in plan.fallback
        assert plan.frame_segments == [0] * 8


@pytest.mark.parametrize('broken', ['malformed', 'not-a-completion', 500, 503, 429])
def test_broken_answer_is_retried(broken):
    with Scripted([broken, 'ok']) as srv:
        assert json.loads(backend(srv).complete(MSGS)) == SEGMENTS
        assert len(srv.requests) == 2


@pytest.mark.parametrize('broken, reason', [('malformed', 'malformed reply'), ('not-a-completion', 'malformed reply'),
                                            (500, 'HTTP 500'), (503, 'HTTP 503')])
def test_always_broken_gives_up_and_falls_back(broken, reason):
    with Scripted([broken]) as srv:
        with pytest.raises(LLMError, match=reason): backend(srv, retries=2).complete(MSGS)
        assert len(srv.requests) == 3                                           # the first try and two retries
        with pytest.warns(PromptFallbackWarning, match=reason):
            assert decompose(CAPTION, 'star', 8, backend(srv)) == [CAPTION]
        with pytest.warns(PromptFallbackWarning, match=reason):
            assert refine(CAPTION, 'star', backend(srv)) == CAPTION


@pytest.mark.parametrize('status', [400, 401, 404])
def test_client_errors_are_not_retried(status):
    with Scripted([status]) as srv:
        with pytest.raises(LLMError, match=f"HTTP {status}.*check the base URL, the model name 'toy-llm'"):
            backend(srv, retries=3).complete(MSGS)
        assert len(srv.requests) == 1


def test_empty_and_wrapped_answers():
    with Scripted(['null-content']) as srv:
        assert backend(srv).complete(MSGS) == ''
        with pytest.warns(PromptFallbackWarning, match='the answer is empty'):
            assert decompose(CAPTION, 'star', 8, backend(srv)) == [CAPTION]
    with Scripted(['think']) as srv:                                            # reasoning model, fenced JSON
        with warnings.catch_warnings():
            warnings.simplefilter('error')
            assert decompose(CAPTION, 'star', 8, backend(srv)) == SEGMENTS


def test_nothing_listening():
    srv = ChatServer(ToyDirector()); url = srv.url; srv.stop()
    b = ChatCompletionsBackend(url, 'm', timeout=LONG, retries=1, backoff=0.01)
    with pytest.raises(LLMError, match='cannot reach'): b.complete(MSGS)
    with pytest.warns(PromptFallbackWarning, match='cannot reach'):
        assert plan_prompts(CAPTION, 'star', 8, refine=b).prompts == [CAPTION]


def test_server_rejects_garbage_and_wrong_paths():
    import httpx
    with ChatServer(ToyDirector(), model='toy') as srv:
        assert httpx.post(srv.url + '/chat/completions', content=b'not json', timeout=LONG).status_code == 400
        assert httpx.post(srv.url + '/completions', json={}, timeout=LONG).status_code == 404
        assert httpx.post(srv.url + '/chat/completions', json={'messages': 'hi'}, timeout=LONG).status_code == 500
        assert httpx.get(srv.url + '/models', timeout=LONG).json()['data'][0]['id'] == 'toy'


def test_make_backend_spec():
    b = make_backend('llama3.2:1b@http://127.0.0.1:11434/v1', timeout=3)
    assert isinstance(b, ChatCompletionsBackend) and b.model == 'llama3.2:1b' and b.timeout == 3
    assert b.url == 'http://127.0.0.1:11434/v1/chat/completions'
    assert isinstance(make_backend('director'), ToyDirector) and make_backend(None) is None and make_backend('none') is None
    with pytest.raises(ValueError, match='MODEL@http'): make_backend('gpt-4o')


def test_command_line_against_the_server():
    with Scripted(['ok']) as srv:
        r = subprocess.run([sys.executable, '-c', 'from vb_nb.prompts import main; main()', '--prompt', CAPTION, '--subject', 'star',
                            '--frames', '6', '--refine', f'toy@{srv.url}', '--timeout', str(LONG), '--json'], capture_output=True, text=True, timeout=CLI_TIMEOUT)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out['prompts'] == SEGMENTS and out['frame_segments'] == [0, 0, 0, 1, 1, 1] and out['fallback'] is None
        assert len(srv.requests) == 1


def test_console_script_exits_cleanly():
    exe = shutil.which('vb_nb_prompts')
    if exe is None: pytest.skip('vb_nb_prompts is not installed: pip install -e . --no-deps')
    r = subprocess.run([exe, '--prompt', CAPTION, '--subject', 'star'], capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert r.stdout.splitlines() == ['director: 2 segment(s) over 8 frames', f'  frames 0-3: {SEGMENTS[0]}', f'  frames 4-7: {SEGMENTS[1]}']


def test_command_line_rejects_missing_subject(capsys):
    with pytest.raises(SystemExit) as e: main(['--prompt', 'a red ball', '--subject', 'star'])
    assert e.value.code == 2 and "'star' does not occur in the prompt" in capsys.readouterr().err


# --- a hostile server: drips, floods, lies ------------------------------------------------------------------------------
import contextlib, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import vb_nb.prompts as P


def completion(text: str) -> bytes:
    return json.dumps({'choices': [{'message': {'role': 'assistant', 'content': text}}]}).encode()


@contextlib.contextmanager
def hostile(behaviour):
    "A server on 127.0.0.1 whose handler `behaviour(handler, n)` writes the raw reply to request number n (0, 1, ...); `handler.server.closing` is set when it stops."
    hits = []
    class H(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'
        def log_message(self, *a): pass
        def do_POST(self):
            self.rfile.read(int(self.headers.get('Content-Length') or 0)); hits.append(time.perf_counter())
            try: behaviour(self, len(hits) - 1)
            except (BrokenPipeError, ConnectionResetError): pass
            self.close_connection = True
    srv = ThreadingHTTPServer(('127.0.0.1', 0), H); srv.daemon_threads = True; srv.closing = threading.Event()
    t = threading.Thread(target=srv.serve_forever, daemon=True); t.start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}/v1', hits
    finally: srv.closing.set(); srv.shutdown(); srv.server_close()


def head(h, status=200, length=None, extra=()):
    h.send_response(status); h.send_header('Content-Type', 'application/json')
    if length is not None: h.send_header('Content-Length', str(length))
    for k, v in extra: h.send_header(k, v)
    h.end_headers()


DRIP_S = 1.0        # seconds between two bytes of a drip: it sends 73 of the reply's 74 bytes, over 73 s


def drip(h, n):
    "Headers at once, then one byte every DRIP_S seconds, never the whole body; stops when the server does."
    body = completion('a red star'); head(h, length=len(body))
    for b in body[:-1]:
        h.wfile.write(bytes([b])); h.wfile.flush()
        if h.server.closing.wait(DRIP_S): return


def test_the_timeout_bounds_the_whole_request_not_each_read():
    timeout = 2.0                                                               # each read comes within DRIP_S; the whole reply never
    with hostile(drip) as (url, hits):
        b = ChatCompletionsBackend(url, 'm', timeout=timeout, retries=0)
        t0 = time.monotonic()
        with pytest.raises(LLMError, match='no answer within 2 s'): b.complete(MSGS)
        took = time.monotonic() - t0
    assert timeout <= took < 15 * timeout < DRIP_S * (len(completion('a red star')) - 1)   # bounded by the timeout, not by 73 s of drips


def flood(h, n):
    "An endless body, chunked (no length); 40 MB at most, so that an old client is bounded too."
    head(h, extra=[('Transfer-Encoding', 'chunked')])
    block = b'{"choices": [' * 5000
    chunk = b'%x\r\n%s\r\n' % (len(block), block)
    for _ in range(40_000_000 // len(block)): h.wfile.write(chunk)


def test_an_endless_reply_is_cut_at_the_cap_and_not_retried():
    with hostile(flood) as (url, hits):
        b = ChatCompletionsBackend(url, 'm', timeout=LONG, retries=2, max_reply_bytes=200_000)
        t0 = time.monotonic()
        with pytest.raises(LLMError, match='more than 200000 bytes'): b.complete(MSGS)
        assert time.monotonic() - t0 < LONG / 2 and len(hits) == 1              # stopped at the cap, long before the timeout; no retry


def test_a_huge_valid_reply_is_refused_from_its_length():
    big = completion('a red star ' * 500_000)                                     # 5.5 MB, valid
    with hostile(lambda h, n: (head(h, length=len(big)), h.wfile.write(big))) as (url, hits):
        with pytest.raises(LLMError, match='more than 1048576 bytes'): ChatCompletionsBackend(url, 'm', timeout=LONG).complete(MSGS)
        assert len(hits) == 1
        with warnings.catch_warnings():                                           # a bigger cap reads it
            warnings.simplefilter('error')
            assert len(ChatCompletionsBackend(url, 'm', timeout=LONG, max_reply_bytes=10**7).complete(MSGS)) == 5_500_000


ESCAPES = '\x1b[2J\x1b]0;owned\x07a striped orange star \x1b[31mdrifts to the left\x1b[0m\r over green grass\x9b1A'


def escaping(h, n):
    body = completion(ESCAPES) if n == 0 else b'\x1b[2Jbusy\x1b]0;x\x07'
    head(h, status=200 if n == 0 else 500, length=len(body)); h.wfile.write(body)


def test_escape_codes_never_reach_the_terminal():
    with hostile(escaping) as (url, hits):
        b = ChatCompletionsBackend(url, 'm', timeout=LONG, retries=0)
        assert refine(CAPTION, 'star', b) == 'a striped orange star drifts to the left over green grass'
        with pytest.warns(PromptFallbackWarning) as w: refine(CAPTION, 'star', b)   # the server's error text, quoted
        assert 'busy' in str(w[0].message) and '\x1b' not in str(w[0].message)
    with hostile(escaping) as (url, hits):                                        # the command line prints the plan
        r = subprocess.run([sys.executable, '-c', 'from vb_nb.prompts import main; main()', '--prompt', CAPTION, '--subject', 'star',
                            '--refine', f'toy@{url}', '--timeout', str(LONG), '--mode', 'refine'], capture_output=True, text=True, timeout=CLI_TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert 'a striped orange star drifts to the left over green grass' in r.stdout
        assert not any(c in r.stdout + r.stderr for c in '\x1b\x9b\x07\r')


class Clock:
    """The `time` module for vb_nb.prompts, its sleeps recorded exactly (the waits between tries) and slept for at most 0.05 s:
    a retry sent at once could reuse the connection the server is closing after its 429."""
    def __init__(self): self.waits = []
    def sleep(self, seconds): self.waits.append(seconds); time.sleep(min(seconds, 0.05))
    def __getattr__(self, name): return getattr(time, name)


@pytest.mark.parametrize('retry_after, wait', [('-5', 0.05), ('nan', 0.05), ('tomorrow', 0.05), ('inf', 0.05), ('1e9', 0.5), ('2', 0.5)])
def test_a_bad_retry_after_is_ignored_or_clamped(retry_after, wait, monkeypatch):
    def busy_then_ok(h, n):
        body = completion('a red star') if n else b'{"error": {"message": "slow down"}}'
        head(h, status=200 if n else 429, length=len(body), extra=[('Retry-After', retry_after)]); h.wfile.write(body)
    clock = Clock(); monkeypatch.setattr(P, 'time', clock)
    with hostile(busy_then_ok) as (url, hits):
        b = ChatCompletionsBackend(url, 'm', timeout=LONG, retries=1, backoff=0.05, max_retry_wait=0.5)
        assert b.complete(MSGS) == 'a red star' and len(hits) == 2
    assert clock.waits == [wait]                 # the backoff for a wait that is no number of seconds; a sane one clamped to max_retry_wait
    assert P._Retry('', '1e9').wait(0.5, 30) == 30 and P._Retry('', '2').wait(0.5, 30) == 2


def test_an_api_key_over_plain_http_to_another_host_warns():
    with pytest.warns(UserWarning, match='over plain http'): ChatCompletionsBackend('http://192.0.2.1:8000/v1', 'm', api_key='sk-x')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        for url in ('https://192.0.2.1/v1', 'http://127.0.0.1:8000/v1', 'http://localhost:11434/v1', 'http://[::1]:8000/v1'):
            ChatCompletionsBackend(url, 'm', api_key='sk-x').close()
        ChatCompletionsBackend('http://192.0.2.1:8000/v1', 'm').close()             # no key, nothing to leak
