"""Browser automation through the official agent-sandbox SDK, against Debian's
headless Chromium on a site this test serves on 127.0.0.1: navigate, fill a
form, click, read the result, screenshots, tabs, cookies, saved state,
routes that block or answer requests, the request log and its HAR."""

from __future__ import annotations

import http.server
import json
import shlex
import socket
import threading
import time
from urllib.parse import parse_qs, urlparse

import pytest
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError
from agent_sandbox.types import RestartRequest

from conftest import processes
from headless_chromium import chromium_args, headless_chromium, wait_devtools
from test_agent import agent  # noqa: F401 - the fixture

PNG = b"\x89PNG\r\n\x1a\n"
FORM = b"""<!doctype html><title>Form</title><body>
<form action="/result" method="get">
<input id="name" name="name" placeholder="Your name"><button id="go" type="submit">Send</button>
</form><script>console.log('form page ready', 42); localStorage.setItem('seen', 'yes')</script>
</body>"""
DOC = b"""<!doctype html><title>Doc</title><body><h1>Main title</h1>
<p>Some <b>bold</b> text with <a href="/x">a link</a> and <code>code()</code>.</p>
<ul><li>one</li><li>two</li></ul><table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td>
</tr></table><script>var hidden = 1</script><div style="display:none">invisible</div></body>"""
WIDGETS = b"""<!doctype html><title>Widgets</title><body style="height:3000px;margin:0">
<input id="a"><input id="b">
<label><input type="checkbox" id="agree"> agree</label>
<select id="color"><option value="r">Red</option><option value="g">Green</option></select>
<input type="file" id="f">
<div id="hov" style="width:200px;height:40px" onmouseover="this.textContent='hovered'">hover me</div>
<p id="far" style="position:absolute;top:2500px">far away text</p>
</body>"""


@pytest.fixture
def site():
    hits = []
    headers = {}

    class Site(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            headers[self.path] = dict(self.headers)
            url = urlparse(self.path)
            if url.path == "/result":
                name = parse_qs(url.query).get("name", [""])[0]
                body = (f"<!doctype html><title>Result</title><p id=r>Hello, {name}!</p>"
                        "<img src='/pixel.png'>").encode()
            elif url.path == "/pixel.png":
                body = PNG
            elif url.path == "/api":
                body = b"from the site"
            elif url.path == "/widgets":
                body = WIDGETS
            elif url.path == "/doc":
                body = DOC
            elif url.path == "/captcha":
                body = (b"<!doctype html><title>Check</title><form><div class='g-recaptcha'>"
                        b"</div><textarea name='g-recaptcha-response'></textarea></form>")
            else:
                body = FORM
            self.send_response(200)
            self.send_header("Content-Type", "image/png" if body == PNG else "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", hits
    srv.shutdown()


@pytest.fixture
def site_headers(site):
    return site


@pytest.fixture
def browser(agent, tmp_path):  # noqa: F811
    with headless_chromium(tmp_path / "profile") as addr:
        a = agent(f"--workspace={tmp_path}", f"--cdp={addr}")
        yield Sandbox(base_url=a.url), tmp_path, a


def test_a_form_is_filled_submitted_and_read(browser, site):
    c, _, _ = browser
    base, hits = site
    r = c.browser_page.navigate(url=base + "/")
    assert r.success and r.data == {"url": base + "/", "title": "Form"}
    elements = c.browser_page.get_elements().data
    assert [(e["tag"], e["id"]) for e in elements] == [("input", "name"), ("button", "go")]
    assert c.browser_page.fill(selector="#name", text="Ada Lovelace").success
    assert c.browser_page.click(index=1).success  # the button, by its index
    # The click navigates: wait for the result page's paragraph.
    assert c.browser_page.wait(type="selector", selector="#r").success
    text = c.browser_page.get_text().data
    assert text == "Hello, Ada Lovelace!"
    assert "/result?name=Ada+Lovelace" in hits
    assert c.browser_page.evaluate(expression="document.title").data == "Result"
    shot = b"".join(c.browser_page.screenshot())
    assert shot.startswith(PNG)
    full = b"".join(c.browser_page.screenshot(full_page=True, format="jpeg", quality=50))
    assert full.startswith(b"\xff\xd8")
    console = c.browser_page.get_console().data
    assert any(m["text"] == "form page ready 42" and m["type"] == "log" for m in console)
    back = c.browser_page.back()
    assert back.success and back.data["title"] == "Form"
    r = c.browser_page.navigate(url=base + "/", wait_until="domcontentloaded")
    assert r.success


def test_errors_on_the_page_are_failures_with_the_reason(browser, site):
    c, _, _ = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/")
    r = c.browser_page.click(selector="#missing")
    assert not r.success and "no element matches #missing" in r.message
    r = c.browser_page.fill(index=7, text="x")
    assert not r.success and "no interactive element has index 7" in r.message
    r = c.browser_page.evaluate(expression="throw new Error('boom')")
    assert not r.success and "boom" in r.message
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    r = c.browser_page.navigate(url=f"http://127.0.0.1:{closed}/")
    assert not r.success and "ERR_CONNECTION_REFUSED" in r.message


def test_tabs_open_activate_and_close(browser, site):
    c, _, _ = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/")
    tabs = c.browser_tabs.create(url=base + "/result?name=two").data
    assert len(tabs) == 2 and tabs[1]["active"] and not tabs[0]["active"]
    assert c.browser_page.get_text().data == "Hello, two!"  # the new tab is the active one
    c.browser_tabs.activate(0)
    assert c.browser_page.evaluate(expression="document.title").data == "Form"
    listed = c.browser_tabs.list().data
    assert [t["active"] for t in listed] == [True, False]
    assert len(c.browser_tabs.close(1).data) == 1
    with pytest.raises(ApiError) as e:
        c.browser_tabs.close(5)
    assert e.value.status_code == 404


def test_cookies_and_saved_state_round_trip(browser, site):
    c, ws, _ = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/")
    assert c.browser_cookies.set_cookies(
        cookies=[{"name": "session", "value": "s3cret", "url": base + "/"}]).success
    got = c.browser_cookies.get_cookies().data
    assert [(k["name"], k["value"]) for k in got] == [("session", "s3cret")]
    r = c.browser_state.save(path="state.json")
    assert r.success and r.data["cookies"] == 1
    saved = json.loads((ws / "state.json").read_text())
    assert saved["cookies"][0]["name"] == "session"
    assert saved["origins"][0]["localStorage"] == [{"name": "seen", "value": "yes"}]
    # A clean browser state, then the saved one back.
    assert c.browser_cookies.clear_cookies().success
    c.browser_page.evaluate(expression="localStorage.clear()")
    assert c.browser_cookies.get_cookies().data == []
    r = c.browser_state.load(path=str(ws / "state.json"))
    assert r.success and r.data["local_storage_items"] == 1
    assert [k["value"] for k in c.browser_cookies.get_cookies().data] == ["s3cret"]
    assert c.browser_page.evaluate(expression="localStorage.getItem('seen')").data == "yes"
    assert not c.browser_state.load(path="nope.json").success


def test_routes_block_and_answer_requests_and_the_har_has_them(browser, site):
    c, ws, _ = browser
    base, hits = site
    c.browser_page.navigate(url=base + "/")
    assert c.browser_network.add_route(url_pattern="*/pixel.png", abort=True).success
    assert c.browser_network.add_route(
        url_pattern="*/api", response={"status": 201, "body": "from the route",
                                       "content_type": "text/plain"}).success
    c.browser_page.navigate(url=base + "/result?name=routes")
    status = c.browser_page.evaluate(
        expression="fetch('/api').then(r => r.status + ' ' + r.statusText).then(async s => "
                   "s + ':' + await (await fetch('/api')).text())").data
    assert status.startswith("201") and status.endswith(":from the route")
    assert "/api" not in hits and "/pixel.png" not in hits  # neither reached the site
    requests_ = c.browser_network.get_requests(filter="pixel").data
    assert requests_ and requests_[-1]["failed"] and "BLOCKED" in requests_[-1]["error"]
    # Without the route the picture loads again.
    assert c.browser_network.remove_route(url_pattern="*/pixel.png").success
    c.browser_page.reload()
    assert "/pixel.png" in hits
    r = c.browser_network.export_har(save_path="net.har")
    assert r.success
    har = json.loads((ws / "net.har").read_text())
    urls = [e["request"]["url"] for e in har["log"]["entries"]]
    assert har["log"]["version"] == "1.2" and base + "/result?name=routes" in urls
    blocked = [e for e in har["log"]["entries"] if e["request"]["url"].endswith("/pixel.png")]
    assert blocked[0]["_error"].startswith("net::ERR_BLOCKED_BY_CLIENT")
    assert blocked[-1]["response"]["status"] == 200


def test_widgets_scrolling_keys_uploads_and_headers(browser, site):
    c, ws, _ = browser
    base, _ = site
    p = c.browser_page
    p.navigate(url=base + "/widgets")
    r = p.fill_form(items=[{"selector": "#a", "value": "first"}, {"index": 1, "value": "second"}])
    assert r.success and r.data == {"filled": 2}
    assert p.evaluate(expression="[a.value, b.value]").data == ["first", "second"]
    # Select all in the focused field, then typing replaces it.
    assert p.hot_key(keys=["Control", "a"]).success
    assert p.type_text(text="typed").success
    assert p.evaluate(expression="b.value").data == "typed"
    assert p.press_key(key="Backspace").success
    assert p.evaluate(expression="b.value").data == "type"
    assert p.check(selector="#agree").success
    assert p.evaluate(expression="agree.checked").data is True
    assert p.uncheck(selector="#agree").success
    assert p.evaluate(expression="agree.checked").data is False
    assert p.select_option(selector="#color", label="Green").success
    assert p.evaluate(expression="color.value").data == "g"
    assert not p.select_option(selector="#color", value="blue").success
    assert p.hover(selector="#hov").success
    assert p.evaluate(expression="hov.textContent").data == "hovered"
    (ws / "upload.txt").write_text("to the page")
    assert p.upload_file(selector="#f", files=["upload.txt"]).success
    assert p.evaluate(expression="f.files[0].name + ' ' + f.files[0].size").data == "upload.txt 11"
    r = p.scroll(direction="down", amount=400)
    assert r.success, r
    print("SCROLL", r.data, p.evaluate(expression="[document.documentElement.scrollHeight, innerHeight, document.scrollingElement.scrollTop]").data)
    assert p.evaluate(expression="window.scrollY").data == 400
    assert p.scroll_to(x=0, y=0).success
    assert p.scroll_to_element(selector="#far").success
    assert p.evaluate(expression="window.scrollY").data > 1500
    found = p.find_text(keyword="FAR AWAY").data
    assert found == [{"text": "far away text", "tag": "p", "id": "far"}]
    p.evaluate(expression="console.warn('to the file')")
    r = p.export_console(save_path="console.json", clear=True)
    assert r.success
    assert any(m["text"] == "to the file" and m["type"] == "warning"
               for m in json.loads((ws / "console.json").read_text()))
    assert p.get_console().data == []


def test_the_page_as_markdown(browser, site):
    c, _, _ = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/doc")
    r = c.browser_page.get_markdown()
    assert r.success and r.data["title"] == "Doc" and r.data["url"] == base + "/doc"
    assert r.data["markdown"] == (
        "# Main title\n\n"
        f"Some **bold** text with [a link]({base}/x) and `code()`.\n\n"
        "- one\n- two\n\n"
        "| k | v |\n| --- | --- |\n| a | 1 |")


def test_captchas_are_detected_and_waited_for_not_solved(browser, site):
    c, _, _ = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/doc")
    assert c.browser_captcha.detect().data["detected"] is False
    assert c.browser_captcha.wait(timeout=5).data.resolved is True
    c.browser_page.navigate(url=base + "/captcha")
    found = c.browser_captcha.detect().data
    assert found["detected"] and found["type"] == "recaptcha" and not found["solved"]
    r = c.browser_captcha.wait(timeout=0.5, poll_interval=0.1)
    assert r.success and r.data.resolved is False
    # Someone solves it: the widget leaves its token in the form.
    c.browser_page.evaluate(expression="setTimeout(() => document.querySelector("
                                       "'[name=g-recaptcha-response]').value = 'tok', 300)")
    assert c.browser_captcha.wait(timeout=10, poll_interval=0.1).data.resolved is True
    assert c.browser_captcha.detect().data["solved"] is True


def test_extra_headers_reach_the_site(browser, site):
    c, _, _ = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/")
    assert c.browser_network.set_headers(headers={"X-Sbx-Test": "on"}).success
    c.browser_page.navigate(url=base + "/result?name=h")
    assert c.browser_page.evaluate(expression="fetch('/api').then(r => r.status)").data == 200
    got = c.browser_network.get_requests(filter="/api").data[-1]["request_headers"]
    assert got.get("X-Sbx-Test") == "on"
    r = requests_get_raw(c, "/v1/browser/network/headers", {"headers": {"bad name": "x"}})
    assert r == 422


def requests_get_raw(c, path, body):
    import httpx
    return httpx.post(c._client_wrapper.get_base_url() + path, json=body).status_code


def test_without_a_browser_each_operation_says_so(agent):  # noqa: F811
    c = Sandbox(base_url=agent().url)
    for call in (lambda: c.browser_page.navigate(url="http://127.0.0.1/"),
                 lambda: c.browser_tabs.list(), lambda: c.browser_cookies.get_cookies(),
                 lambda: c.browser_page.get_text()):
        with pytest.raises(ApiError) as e:
            call()
        assert e.value.status_code == 503 and "no browser" in e.value.body["message"]


def test_the_same_flow_through_mcp_browser_tools(browser, site):
    """The official mcp SDK over /mcp: navigate, fill, click, wait, read,
    screenshot (an image content), tabs; a page error is an isError result."""
    import asyncio
    import base64

    from mcp.client.client import Client

    _, _, a = browser
    base, hits = site

    def text_of(result) -> str:
        return "".join(c.text for c in result.content if c.type == "text")

    async def session():
        async with Client(f"{a.url}/mcp") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert {"browser_navigate", "browser_click", "browser_fill", "browser_get_text",
                    "browser_screenshot", "browser_tabs", "browser_wait"} <= names
            r = await client.call_tool("browser_navigate", {"url": base + "/"})
            assert not r.is_error and json.loads(text_of(r))["title"] == "Form"
            elements = json.loads(text_of(await client.call_tool("browser_get_elements", {})))
            assert elements[0]["id"] == "name"
            r = await client.call_tool("browser_fill", {"index": 0, "text": "Grace"})
            assert not r.is_error, text_of(r)
            r = await client.call_tool("browser_click", {"selector": "#go"})
            assert not r.is_error, text_of(r)
            r = await client.call_tool("browser_wait", {"type": "selector", "selector": "#r"})
            assert not r.is_error, text_of(r)
            assert text_of(await client.call_tool("browser_get_text", {})) == "Hello, Grace!"
            shot = await client.call_tool("browser_screenshot", {})
            image = [c for c in shot.content if c.type == "image"][0]
            assert image.mime_type == "image/png"
            assert base64.b64decode(image.data).startswith(PNG)
            tabs = json.loads(text_of(await client.call_tool("browser_tabs", {})))
            assert tabs[0]["title"] == "Result" and tabs[0]["active"]
            bad = await client.call_tool("browser_click", {"selector": "#nothing-here"})
            assert bad.is_error and "no element matches #nothing-here" in text_of(bad)
    asyncio.run(session())
    assert "/result?name=Grace" in hits


def test_scoped_headers_reach_only_their_origin(browser):
    c, _, _ = browser
    seen = {}

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            seen[(self.headers["Host"], self.path)] = dict(self.headers)
            body = b"<!doctype html><title>Echo</title><p>ok</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    try:
        scoped = f"http://127.0.0.1:{port}"
        r = c.browser_network.set_scoped_headers(origin=scoped,
                                                 headers={"X-Tenant": "acme", "Accept": "x/y"})
        assert r.success
        c.browser_page.navigate(url=f"{scoped}/a")
        # The same server under another origin (another host name) gets none.
        c.browser_page.navigate(url=f"http://localhost:{port}/b")
        got = seen[(f"127.0.0.1:{port}", "/a")]
        assert got["X-Tenant"] == "acme" and got["Accept"] == "x/y"
        assert "User-Agent" in got  # the browser's own headers are kept
        other = seen[(f"localhost:{port}", "/b")]
        assert "X-Tenant" not in other and other["Accept"] != "x/y"
        # An empty set removes the scope.
        assert c.browser_network.set_scoped_headers(origin=scoped, headers={}).success
        c.browser_page.navigate(url=f"{scoped}/c")
        assert "X-Tenant" not in seen[(f"127.0.0.1:{port}", "/c")]
        for origin in ("127.0.0.1", "http://", "http://h/path", "ftp://h", "http://*.h"):
            assert requests_get_raw(c, "/v1/browser/network/scoped_headers",
                                    {"origin": origin, "headers": {}}) == 422, origin
        assert requests_get_raw(c, "/v1/browser/network/scoped_headers",
                                {"origin": scoped, "headers": {"bad name": "x"}}) == 422
    finally:
        srv.shutdown()
        srv.server_close()


def test_config_sets_the_resolution_of_every_page(browser, site):
    c, _, a = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/")
    from agent_sandbox.types import Resolution
    r = c.browser.set_config(resolution=Resolution(width=800, height=600))
    assert r.success
    size = "[window.innerWidth, window.innerHeight]"
    assert c.browser_page.evaluate(expression=size).data == [800, 600]
    # A page opened later has it too, and /v1/browser/info sees it.
    c.browser_tabs.create(url=base + "/result?name=x")
    assert c.browser_page.evaluate(expression=size).data == [800, 600]
    info = c.browser.get_info().data
    assert (info.page_viewport.width, info.page_viewport.height) == (800, 600)
    for bad in ({"width": 801, "height": 600}, {"width": "800", "height": 600}, {"width": 800}):
        assert requests_get_raw(c, "/v1/browser/config", {"resolution": bad}) == 422, bad


def test_restart_relaunches_the_browser_the_agent_started(agent, site, tmp_path):  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = agent(f"--workspace={tmp_path}", f"--cdp=127.0.0.1:{port}",
              "--browser-cmd=" + shlex.join(chromium_args(port, tmp_path / "profile")))
    c = Sandbox(base_url=a.url)
    base, _ = site

    def browser_pids():
        return {pid for pid, _, _, cmd in processes()
                if f"--remote-debugging-port={port}" in cmd and pid != a.proc.pid}

    wait_devtools(port)  # the agent started it
    assert c.browser_page.navigate(url=base + "/").success
    def started():  # the agent's child: the command's shell or the browser itself
        return [pid for pid, ppid, _, _ in processes() if ppid == a.proc.pid]

    before, first = browser_pids(), started()
    r = c.browser.restart(request=RestartRequest(mode="hard"))
    assert r.success and r.data["mode"] == "hard" and r.data["pid"] in started()
    assert started() != first and len(started()) == 1
    assert browser_pids() and not (browser_pids() & before)  # all old processes gone
    # The new browser serves the next operation at once.
    assert c.browser_page.navigate(url=base + "/result?name=again").success
    assert c.browser_page.get_text().data == "Hello, again!"
    # A soft restart reconnects to the same browser.
    second = started()
    assert c.browser.restart(request=RestartRequest(mode="soft")).data["mode"] == "soft"
    assert c.browser_page.get_text().data == "Hello, again!"
    assert started() == second
    # Policies are not the agent's to set.
    with pytest.raises(ApiError) as e:
        c.browser.restart(request=RestartRequest(mode="hard", url_blocklist=["x.test"]))
    assert e.value.status_code == 501
    # Stopping the agent stops its browser.
    assert a.stop() == 0
    deadline = time.monotonic() + 10
    while browser_pids():
        assert time.monotonic() < deadline, "the browser outlived the agent"
        time.sleep(0.1)


def test_a_browser_the_agent_did_not_start_gets_a_soft_restart_only(browser):
    c, _, _ = browser
    assert c.browser.restart(request=RestartRequest(mode="soft")).success
    with pytest.raises(ApiError) as e:
        c.browser.restart()
    assert e.value.status_code == 409 and "--browser-cmd" in e.value.body["error"]["message"]
    assert c.browser_tabs.list().success  # still driven after the soft restart


def test_display_actions_drive_the_page(browser, site):
    from agent_sandbox import types as t
    c, _, _ = browser
    base, _ = site
    c.browser_page.navigate(url=base + "/")

    def ev(expression):
        return c.browser_page.evaluate(expression=expression).data

    def act(action):
        r = c.browser.execute_action(request=action)
        assert r.success and r.status == "success"
        assert r.action_performed == r.data.action_performed == action.action_type
        return r

    ev("window.pos = null; addEventListener('mousemove', e => pos = [e.clientX, e.clientY]);"
       "document.body.style.height = '5000px'; 1")
    box = ev("(() => { const r = document.querySelector('#name').getBoundingClientRect();"
             " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
    # The SDK's action models have no action_type field: it goes as an extra.
    act(t.ClickAction(action_type="CLICK", x=box[0], y=box[1]))
    assert ev("document.activeElement.id") == "name"
    act(t.TypingAction(action_type="TYPING", text="Grace Hopper"))
    assert ev("document.querySelector('#name').value") == "Grace Hopper"
    act(t.HotkeyAction(action_type="HOTKEY", keys=["Control", "a"]))
    act(t.PressAction(action_type="PRESS", key="Backspace"))
    assert ev("document.querySelector('#name').value") == ""
    act(t.KeyDownAction(action_type="KEY_DOWN", key="x"))
    act(t.KeyUpAction(action_type="KEY_UP", key="x"))
    assert ev("document.querySelector('#name').value") == "x"
    act(t.MoveToAction(action_type="MOVE_TO", x=10, y=20))
    act(t.MoveRelAction(action_type="MOVE_REL", x_offset=5, y_offset=7))
    assert ev("pos") == [15, 27]
    act(t.ScrollAction(action_type="SCROLL", dy=3))
    # The wheel scrolls asynchronously: wait until the page has moved.
    deadline = time.monotonic() + 10
    while ev("scrollY") != 300:
        assert time.monotonic() < deadline, ev("scrollY")
        time.sleep(0.05)
    started = time.monotonic()
    act(t.WaitAction(action_type="WAIT", duration=0.3))
    assert time.monotonic() - started >= 0.3
    for bad in ({"action_type": "FLY"}, {"action_type": "CLICK", "num_clicks": 4},
                {"action_type": "MOVE_TO", "x": 1}, {"action_type": "WAIT", "duration": 0},
                {"action_type": "TYPING", "text": ""}, {"action_type": "HOTKEY", "keys": []},
                {"action_type": "MOVE_TO", "x": float("1e300") * 10, "y": 1}):
        body = json.dumps(bad, allow_nan=True)
        import httpx
        r = httpx.post(c._client_wrapper.get_base_url() + "/v1/browser/actions",
                       content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, bad
