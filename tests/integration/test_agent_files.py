"""sbx-agent's /v1/file read, write and list, through the official SDK, with
the filesystem itself as the witness."""

from __future__ import annotations

import base64
import os

import pytest
import requests
from agent_sandbox import Sandbox
from agent_sandbox.core.api_error import ApiError

from conftest import SANITIZED
from test_agent import agent  # noqa: F401 - the fixture


@pytest.fixture
def sdk(agent, tmp_path):  # noqa: F811
    a = agent(f"--workspace={tmp_path}", "--max-file-bytes=65536")
    return Sandbox(base_url=a.url), tmp_path, a


def test_write_then_read_with_line_ranges(sdk):
    c, ws, _ = sdk
    w = c.file.write_file(file=str(ws / "deep/er/notes.txt"), content="one\ntwo\nthree\n")
    assert w.success and w.data.bytes_written == 14
    # The file is really there, parents created.
    assert (ws / "deep/er/notes.txt").read_text() == "one\ntwo\nthree\n"
    r = c.file.read_file(file=str(ws / "deep/er/notes.txt"))
    assert r.success and r.data.content == "one\ntwo\nthree\n"
    assert c.file.read_file(file=str(ws / "deep/er/notes.txt"), start_line=1,
                            end_line=3).data.content == "two\nthree\n"
    assert c.file.read_file(file=str(ws / "deep/er/notes.txt"), start_line=2).data.content == \
        "three\n"
    assert c.file.read_file(file=str(ws / "deep/er/notes.txt"), start_line=5).data.content == ""


def test_relative_paths_resolve_in_the_workspace(sdk):
    c, ws, _ = sdk
    (ws / "made-by-python.txt").write_text("héllo wörld ✓")
    r = c.file.read_file(file="made-by-python.txt")
    assert r.data.content == "héllo wörld ✓" and r.data.file == str(ws / "made-by-python.txt")
    c.file.write_file(file="out.txt", content="x")
    assert (ws / "out.txt").read_text() == "x"


def test_append_and_newline_options(sdk):
    c, ws, _ = sdk
    p = str(ws / "log.txt")
    c.file.write_file(file=p, content="a")
    c.file.write_file(file=p, content="b", append=True, leading_newline=True,
                      trailing_newline=True)
    assert (ws / "log.txt").read_text() == "a\nb\n"
    c.file.write_file(file=p, content="fresh")
    assert (ws / "log.txt").read_text() == "fresh"


def test_binary_through_base64(sdk):
    c, ws, _ = sdk
    blob = bytes(range(256)) * 40
    w = c.file.write_file(file=str(ws / "blob.bin"), content=base64.b64encode(blob).decode(),
                          encoding="base64")
    assert w.success and w.data.bytes_written == len(blob)
    assert (ws / "blob.bin").read_bytes() == blob
    # Binary is not text: reading it says so instead of mangling it.
    r = c.file.read_file(file=str(ws / "blob.bin"))
    assert not r.success and r.data.error_type == "decode_error"
    w = c.file.write_file(file=str(ws / "x"), content="not base64!", encoding="base64")
    assert not w.success and w.data.error_type == "decode_error"


@pytest.mark.parametrize("setup, target, error_type, errno_name", [
    (None, "missing.txt", "not_found", "ENOENT"),
    ("dir", "adir", "invalid_target", "EISDIR"),
    ("file", "afile/child.txt", "invalid_target", "ENOTDIR"),
])
def test_read_failures_have_typed_errors(sdk, setup, target, error_type, errno_name):
    c, ws, _ = sdk
    if setup == "dir":
        (ws / "adir").mkdir()
    if setup == "file":
        (ws / "afile").write_text("x")
    r = c.file.read_file(file=str(ws / target))
    assert r.success is False
    assert r.data.error_type == error_type and r.data.errno_name == errno_name
    assert r.data.operation == "read" and r.data.path == str(ws / target)
    assert r.message


def test_large_files_are_refused_with_a_pointer(sdk):
    c, ws, _ = sdk
    (ws / "big.txt").write_text("x" * 70000)
    r = c.file.read_file(file=str(ws / "big.txt"))
    assert not r.success and r.data.error_type == "io_error"
    assert "larger than 65536 bytes" in r.message and "download" in r.message


def test_list_options(sdk):
    c, ws, _ = sdk
    (ws / "src/pkg").mkdir(parents=True)
    (ws / "src/main.py").write_text("print(1)\n")
    (ws / "src/pkg/mod.py").write_text("x = 1\n" * 100)
    (ws / "src/README.md").write_text("# r\n")
    (ws / ".hidden").write_text("h")

    top = c.file.list_path(path=str(ws))
    assert sorted(f.name for f in top.data.files) == [".hidden", "src"]
    assert top.data.directory_count == 1 and top.data.file_count == 1

    assert [f.name for f in c.file.list_path(path=str(ws), show_hidden=False).data.files] == \
        ["src"]

    everything = c.file.list_path(path=str(ws), recursive=True)
    assert everything.data.total_count == 6
    py = c.file.list_path(path=str(ws), recursive=True, file_types=[".py"])
    assert sorted(f.path for f in py.data.files if not f.is_directory) == \
        [str(ws / "src/main.py"), str(ws / "src/pkg/mod.py")]
    shallow = c.file.list_path(path=str(ws), recursive=True, max_depth=2, show_hidden=False)
    assert str(ws / "src/pkg/mod.py") not in [f.path for f in shallow.data.files]

    by_size = c.file.list_path(path=str(ws / "src"), recursive=True, sort_by="size",
                               sort_desc=True, include_permissions=True)
    first = by_size.data.files[0]
    assert first.name == "mod.py" and first.size == 600 and first.permissions == "644"
    assert first.extension == ".py" and first.modified_time

    missing = c.file.list_path(path=str(ws / "nope"))
    assert not missing.success and missing.data.error_type == "not_found"
    not_dir = c.file.list_path(path=str(ws / "src/main.py"))
    assert not not_dir.success and not_dir.data.error_type == "invalid_target"


def test_invalid_requests_get_422(sdk):
    c, ws, a = sdk
    with pytest.raises(ApiError) as e:
        c.file.write_file(file=str(ws / "x"), content="x", encoding="latin-1")
    assert e.value.status_code == 422
    r = requests.post(f"{a.url}/v1/file/read", json={"start_line": 1}, timeout=5)
    assert r.status_code == 422
    assert r.json() == {"detail": [{"loc": ["body", "file"], "msg": "Field required",
                                    "type": "missing"}]}
    r = requests.post(f"{a.url}/v1/file/read", json={"file": 7}, timeout=5)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "string_type"
    r = requests.post(f"{a.url}/v1/file/read", data=b"{not json", timeout=5,
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]


def test_replace_and_search(sdk):
    c, ws, _ = sdk
    f = ws / "conf.ini"
    f.write_text("host=a\nport=1\nhost=a\n")
    r = c.file.replace_in_file(file=str(f), old_str="host=a", new_str="host=b")
    assert r.success and r.data.replaced_count == 2
    assert f.read_text() == "host=b\nport=1\nhost=b\n"
    s = c.file.search_in_file(file=str(f), regex="^(host|port)=[0-9]+$")
    assert s.data.matches == ["port=1"] and s.data.line_numbers == [2]
    bad = c.file.search_in_file(file=str(f), regex="([unclosed")
    assert not bad.success and "regular expression" in bad.message


def test_find_and_glob(sdk):
    c, ws, _ = sdk
    for rel in ["a.py", "pkg/b.py", "pkg/deep/c.py", "pkg/deep/d.txt", ".hidden/e.py",
                "node_modules/x.py"]:
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(rel)
    found = c.file.find_files(path=str(ws), glob="*.py")
    assert sorted(found.data.files) == sorted(str(ws / r) for r in
                                              ["a.py", "pkg/b.py", "pkg/deep/c.py",
                                               ".hidden/e.py", "node_modules/x.py"])
    g = c.file.glob_files(path=str(ws), pattern="**/*.py", exclude=["node_modules/**"])
    assert sorted(x.path for x in g.data.files) == sorted(str(ws / r) for r in
                                                          ["a.py", "pkg/b.py", "pkg/deep/c.py"])
    assert g.data.total_count == 3 and not g.data.truncated and g.data.files[0].size
    g = c.file.glob_files(path=str(ws), pattern="pkg/*", files_only=False)
    assert sorted((x.path, x.is_directory) for x in g.data.files) == [
        (str(ws / "pkg/b.py"), False), (str(ws / "pkg/deep"), True)]
    capped = c.file.glob_files(path=str(ws), pattern="**/*", max_results=2)
    assert capped.data.total_count == 2 and capped.data.truncated


def test_str_replace_editor(sdk):
    c, ws, _ = sdk
    p = str(ws / "src/app.py")
    ed = c.file.str_replace_editor
    created = ed(command="create", path=p, file_text="def f():\n    return 1\n")
    assert created.success and created.data.prev_exist is False
    again = ed(command="create", path=p, file_text="x")
    assert not again.success and again.data.error_type == "already_exists"

    view = ed(command="view", path=p)
    assert "     1\tdef f():\n     2\t    return 1\n" in view.data.output
    assert "     2\t" in ed(command="view", path=p, view_range=[2, -1]).data.output
    assert "     1\t" not in ed(command="view", path=p, view_range=[2, -1]).data.output

    edit = ed(command="str_replace", path=p, old_str="return 1", new_str="return 2")
    assert edit.success and (ws / "src/app.py").read_text() == "def f():\n    return 2\n"
    assert edit.data.old_content == "def f():\n    return 1\n"
    assert "return 2" in edit.data.output

    missing = ed(command="str_replace", path=p, old_str="nowhere", new_str="x")
    assert not missing.success and "does not appear verbatim" in missing.message
    (ws / "dup.txt").write_text("x\nx\n")
    dup = ed(command="str_replace", path=str(ws / "dup.txt"), old_str="x", new_str="y")
    assert not dup.success and "appears 2 times" in dup.message
    assert ed(command="str_replace", path=str(ws / "dup.txt"), old_str="x", new_str="y",
              replace_mode="ALL").success
    assert (ws / "dup.txt").read_text() == "y\ny\n"

    ins = ed(command="insert", path=p, insert_line=1, new_str="    '''doc'''")
    assert ins.success
    assert (ws / "src/app.py").read_text() == "def f():\n    '''doc'''\n    return 2\n"
    assert ed(command="undo_edit", path=p).success
    assert (ws / "src/app.py").read_text() == "def f():\n    return 2\n"
    assert ed(command="undo_edit", path=p).success
    assert (ws / "src/app.py").read_text() == "def f():\n    return 1\n"
    none_left = ed(command="undo_edit", path=p)
    assert not none_left.success and "No edit history" in none_left.message

    tree = ed(command="view", path=str(ws / "src"))
    assert str(ws / "src/app.py") in tree.data.output


def test_grep(sdk):
    c, ws, _ = sdk
    (ws / "src/pkg").mkdir(parents=True)
    (ws / "src/app.py").write_text("import os\n\ndef main():\n    # TODO: tidy\n    return 0\n")
    (ws / "src/pkg/util.py").write_text("def helper():\n    pass  # todo later\n")
    (ws / "src/notes.md").write_text("TODO: write docs\n")
    (ws / "src/.hidden.py").write_text("# TODO hidden\n")
    (ws / "src/blob.bin").write_bytes(b"\0TODO\0")
    g = c.file.grep_files(path=str(ws / "src"), pattern="TODO")
    assert sorted((m.file, m.line_number) for m in g.data.matches) == [
        (str(ws / "src/app.py"), 4), (str(ws / "src/notes.md"), 1)]
    assert g.data.files_matched == 2 and not g.data.truncated

    g = c.file.grep_files(path=str(ws / "src"), pattern="todo", case_insensitive=True, type="py")
    assert sorted(m.file for m in g.data.matches) == [str(ws / "src/app.py"),
                                                       str(ws / "src/pkg/util.py")]
    g = c.file.grep_files(path=str(ws / "src"), pattern="def main", include=["*.py"],
                          context_before=2, context_after=1)
    m = g.data.matches[0]
    assert m.line_content == "def main():" and m.context_before == ["import os", ""]
    assert m.context_after == ["    # TODO: tidy"]
    g = c.file.grep_files(path=str(ws / "src"), pattern="(x", fixed_strings=True)
    assert g.success and g.data.match_count == 0
    g = c.file.grep_files(path=str(ws / "src"), pattern="main\\(\\):\n +#", multiline=True)
    assert [(m.file, m.line_number) for m in g.data.matches] == [(str(ws / "src/app.py"), 3)]
    g = c.file.grep_files(path=str(ws / "src"), pattern="e", max_results=2)
    assert len(g.data.matches) == 2 and g.data.truncated
    page2 = c.file.grep_files(path=str(ws / "src"), pattern="def", offset=1)
    assert page2.data.match_count == 2 and len(page2.data.matches) == 1
    assert not c.file.grep_files(path=str(ws / "src"), pattern="x", type="cobol").success


def test_fifos_and_devices_are_refused_without_blocking(sdk):
    """A FIFO would block open() until a writer came (and with it a worker
    thread, or for a download the whole agent): refused at once instead."""
    c, ws, a = sdk
    os.mkfifo(ws / "pipe")
    r = c.file.read_file(file=str(ws / "pipe"))
    assert not r.success and r.data.error_type == "invalid_target"
    r = c.file.read_file(file="/dev/zero")
    assert not r.success and r.data.error_type == "invalid_target"
    r = requests.get(f"{a.url}/v1/file/download", params={"path": str(ws / "pipe")}, timeout=5)
    assert r.status_code == 400 and r.json()["data"]["error_type"] == "invalid_target"
    (ws / "ok.txt").write_text("still serving\n")
    assert c.file.read_file(file=str(ws / "ok.txt")).data.content == "still serving\n"


def test_the_api_and_the_shell_see_the_same_files(sdk):
    """What the file API writes the shell reads, and the reverse, in both
    directions and through relative paths (both start in the workspace)."""
    c, ws, _ = sdk
    assert c.file.write_file(file="shared/by-api.txt", content="written by the API ✓\n").success
    r = c.shell.exec_command(command="cat shared/by-api.txt; wc -c < shared/by-api.txt")
    assert r.data.output.splitlines()[:2] == [
        "written by the API ✓", str(len("written by the API ✓\n".encode()))]
    r = c.shell.exec_command(
        command="printf 'from the shell %s\\n' \"$(id -un)\" > shared/by-shell.txt")
    assert r.data.exit_code == 0
    got = c.file.read_file(file="shared/by-shell.txt")
    user = c.shell.exec_command(command="id -un").data.output.strip()
    assert got.data.content == f"from the shell {user}\n"
    listed = c.file.list_path(path=str(ws / "shared"))
    assert sorted(f.name for f in listed.data.files) == ["by-api.txt", "by-shell.txt"]


def test_walks_are_bounded_in_time(agent, tmp_path):  # noqa: F811
    """Grepping the whole file system (/proc and /sys included) answers by the
    walk limit with what it found, marked truncated, instead of running on."""
    import time
    a = agent(f"--workspace={tmp_path}", "--max-walk-seconds=1")
    c = Sandbox(base_url=a.url)
    t0 = time.monotonic()
    r = c.file.grep_files(path="/", pattern="no-such-text-anywhere-3d9f")
    assert time.monotonic() - t0 < 10
    assert r.success and r.data.truncated
    # A "regular" file that would block forever (the kernel log) is an error.
    if os.access("/proc/kmsg", os.R_OK):
        t0 = time.monotonic()
        r = c.file.read_file(file="/proc/kmsg")
        assert time.monotonic() - t0 < 5 and not r.success


@pytest.mark.parametrize("size", ["1e30", "inf", "NaN", "-1", "1Q", "1e308G", " 1M", "1MX", ""])
def test_grep_max_file_size_must_be_a_size(sdk, size):
    # "1e30" (or inf, NaN) was converted to size_t unchecked: undefined.
    _, ws, a = sdk
    (ws / "t.txt").write_text("needle\n")
    r = requests.post(f"{a.url}/v1/file/grep",
                      json={"path": str(ws), "pattern": "needle", "max_file_size": size})
    if size == "":
        assert r.status_code == 200 and r.json()["data"]["files_matched"] == 1, r.text
        return
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "max_file_size"]


@pytest.mark.parametrize("size,found", [("1M", 1), ("500K", 1), ("3", 0), ("1.5kb", 1),
                                        ("1048576", 1)])
def test_grep_max_file_size_skips_larger_files(sdk, size, found):
    _, ws, a = sdk
    (ws / "t.txt").write_text("needle\n")  # 7 bytes
    r = requests.post(f"{a.url}/v1/file/grep",
                      json={"path": str(ws), "pattern": "needle", "max_file_size": size})
    assert r.status_code == 200 and r.json()["data"]["files_matched"] == found, r.text


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key}")


def test_a_json_body_that_would_take_too_much_memory_is_refused(agent, tmp_path):  # noqa: F811
    # A 60 MiB array of small integers took the agent to 1.27 GiB (about 40
    # bytes of jansson objects per 2 bytes of text), and 1 GiB stayed.
    ws = tmp_path
    a = agent(f"--workspace={ws}")
    n = 30 << 20
    body = b'{"path": "x", "content": "y", "extra": [' + b"1," * (n - 1) + b"1]}"
    before = status_kib(a.proc.pid, "VmRSS")
    r = requests.post(f"{a.url}/v1/file/write", data=body,
                      headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 413, r.text[:300]
    assert "MiB of memory" in r.json()["error"]["message"]
    peak = status_kib(a.proc.pid, "VmHWM") - before
    after = status_kib(a.proc.pid, "VmRSS") - before
    print(f"body {len(body) >> 20} MiB: peak +{peak >> 10} MiB, after +{after >> 10} MiB")
    # The body itself (60 MiB) plus the parse's budget (3x the body + 4
    # MiB, capped at 256 MiB), not 40 times the body. (Under ASan memory
    # figures say nothing about the program: see conftest.)
    if not SANITIZED:
        assert peak < 400 << 10
        assert after < 100 << 10
    # A long string (what a file write carries) fits its budget.
    content = "z" * (20 << 20)
    r = requests.post(f"{a.url}/v1/file/write", json={"file": str(ws / "big.txt"),
                                                       "content": content}, timeout=60)
    assert r.status_code == 200 and r.json()["success"], r.text[:300]
    assert (ws / "big.txt").stat().st_size == 20 << 20
