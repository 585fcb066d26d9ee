# sbx-agent's Python session driver: runs as `python3 -u -c <this> MARKER`.
# Requests arrive on fd 3, one JSON object per line ({"code", "cwd"}); each
# reply goes to fd 4 as one line, after the marker has been written to
# stdout and stderr (the agent cuts each execution's output there).
import ast
import json
import linecache
import os
import sys
import traceback

marker = sys.argv[1]
del sys.argv[1:]
sys.argv[0] = ""
requests = os.fdopen(3, "rb", buffering=0)
replies = os.fdopen(4, "w", buffering=1)
namespace = {"__name__": "__main__", "__builtins__": __builtins__}
count = 0


def user_frames(tb):
    # Drop this driver's own frames: the traceback starts at the cell.
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
        tb = tb.tb_next
    return tb


def run(code, cwd):
    global count
    count += 1
    name = f"<cell-{count}>"
    linecache.cache[name] = (len(code), None, code.splitlines(True), name)
    reply = {"execution_count": count, "status": "ok", "result": None}
    try:
        if cwd:
            os.chdir(cwd)
        tree = ast.parse(code, filename=name, mode="exec")
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr):
            last = ast.Expression(tree.body.pop().value)
        exec(compile(tree, name, "exec"), namespace)
        if last is not None:
            value = eval(compile(last, name, "eval"), namespace)
            if value is not None:
                namespace["_"] = value
                reply["result"] = repr(value)
    except BaseException as e:  # noqa: BLE001 - the user's errors are the answer
        lines = traceback.format_exception(type(e), e, user_frames(e.__traceback__))
        reply.update(status="error", ename=type(e).__name__, evalue=str(e),
                     traceback="".join(lines).rstrip("\n").split("\n"))
    return reply


while True:
    try:
        line = requests.readline()
        if not line:
            break
        req = json.loads(line)
        reply = run(req.get("code", ""), req.get("cwd"))
    except KeyboardInterrupt:
        continue  # an interrupt that came between executions
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream must not end the session
            pass
    os.write(1, marker.encode())
    os.write(2, marker.encode())
    replies.write(json.dumps(reply, default=str) + "\n")
