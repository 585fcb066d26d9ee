"""The comparison peer for bench/agent: the same operations served by
Starlette on uvicorn, the ASGI stack under AIO Sandbox's FastAPI server. It
is a stand-in written for the benchmark, not AIO itself (whose server ships
only inside its container image): it measures what that kind of stack
costs for the same work, and it does less than the agent (no PTY, no
sessions: each exec is a fresh `bash -c`)."""

from __future__ import annotations

import asyncio
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route


async def shell_exec(request: Request) -> JSONResponse:
    body = await request.json()
    proc = await asyncio.create_subprocess_exec(
        "bash", "-c", body["command"], stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return JSONResponse({"success": True, "message": "ok", "data": {
        "output": out.decode(errors="replace"), "exit_code": proc.returncode,
        "status": "completed"}})


async def upload(request: Request) -> JSONResponse:
    form = await request.form(max_part_size=1 << 30)
    up = form["file"]
    path = form["path"]
    size = 0
    with open(path, "wb") as f:
        while chunk := await up.read(1 << 20):
            f.write(chunk)
            size += len(chunk)
    return JSONResponse({"success": True, "data": {"file_path": path, "file_size": size}})


async def download(request: Request) -> FileResponse:
    return FileResponse(request.query_params["path"])


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


app = Starlette(routes=[
    Route("/healthz", healthz, methods=["GET"]),
    Route("/v1/shell/exec", shell_exec, methods=["POST"]),
    Route("/v1/file/upload", upload, methods=["POST"]),
    Route("/v1/file/download", download, methods=["GET"]),
])

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning",
                access_log=False)
