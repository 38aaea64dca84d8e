"""Start local OpenAI-compatible model servers for integration tests.

Currently one server: ``transformers serve`` (install ``transformers[serving]``). It is started as::

    transformers serve MODEL --host 127.0.0.1 --port PORT [--device DEVICE]

with ``MODEL`` given as the positional *force model* argument, so the model is loaded before the
HTTP socket opens (``/health`` answering means the model is ready) and every request is pinned to
it. In a request, ``"model"`` may then be omitted or must equal the forced name exactly (this
module passes the absolute path of a local folder); anything else gets a 400.

Known limitation of transformers 5.24: a chat request carrying ``"stop"`` fails with HTTP 500 for
multimodal models such as Qwen3-VL, because the server hands the processor (not its tokenizer) to
``generate(stop_strings=...)``. Apply stop strings on the client side instead.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence

__all__ = [
    "ServeProcess",
    "live_group_members",
    "start_transformers_serve",
    "stop_transformers_serve",
    "transformers_serve",
    "wait_process_group_gone",
]

_HOST = "127.0.0.1"

# Run the CLI through the current interpreter rather than a `transformers` script found on PATH,
# so the server sees exactly the caller's environment (the project venv in tests).
# argv[0] is set so that usage errors read "transformers serve ..." rather than "-c serve ...".
_CLI = "import sys; sys.argv[0] = 'transformers'; from transformers.cli.transformers import main; sys.exit(main())"


class ServeProcess(subprocess.Popen):  # type: ignore[type-arg]
    """A server process started by :func:`start_transformers_serve`.

    Attributes:
        log_path: File receiving the server's stdout and stderr.
        model: The model name the server is pinned to; use it (or nothing) as a request's ``model``.
        base_url: OpenAI-style base URL, ``http://127.0.0.1:PORT/v1``.
    """

    log_path: pathlib.Path
    model: str
    base_url: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(path: pathlib.Path, n_chars: int = 4000) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-n_chars:]
    except OSError:
        return "<no log>"


def stop_transformers_serve(proc: subprocess.Popen, timeout: float = 10.0, *, keep_log: bool = False) -> None:  # type: ignore[type-arg]
    """Stop a server from :func:`start_transformers_serve` and its whole process group.

    Sends SIGTERM to the group (uvicorn shuts down cleanly on it), then SIGKILL after ``timeout``
    seconds, and returns only once no live process is left in the group (or raises
    ``TimeoutError`` naming the survivors). Workers the server forked may outlive the leader for a
    moment after SIGTERM, so waiting for the leader alone is not enough. The log file is deleted
    unless ``keep_log``. Safe to call twice.
    """
    if proc.poll() is None:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(timeout=timeout)
    if not wait_process_group_gone(proc.pid, timeout):
        _signal_group(proc, signal.SIGKILL)
        if not wait_process_group_gone(proc.pid, timeout):
            raise TimeoutError(
                f"process group {proc.pid} still has live members after SIGKILL: {live_group_members(proc.pid)}"
            )
    log_path = getattr(proc, "log_path", None)
    if log_path is not None and not keep_log:
        with contextlib.suppress(OSError):
            log_path.unlink()


def live_group_members(pgid: int) -> list[int]:
    """Pids of the processes in group ``pgid`` that are still running (zombies excluded).

    Zombies are left out on purpose: once a server's leader has exited, its orphaned workers are
    reaped by whichever process adopts them (init, or a container's PID 1 that may never reap), so
    a zombie says nothing about whether the server still runs. On systems without ``/proc`` this
    falls back to asking the kernel whether the group exists at all.
    """
    proc_root = pathlib.Path("/proc")
    if not (proc_root / "self" / "stat").exists():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:  # pragma: no cover - group exists but belongs to someone else
            pass
        return [pgid]
    members = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def wait_process_group_gone(pgid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until group ``pgid`` has no live member; True if it has none."""
    deadline = time.monotonic() + timeout
    while live_group_members(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _signal_group(proc: subprocess.Popen, sig: int) -> None:  # type: ignore[type-arg]
    # The server runs in its own session (start_new_session), so its pgid is its pid; signalling the
    # group also reaches any worker it forked, and nothing of the caller's.
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    else:  # pragma: no cover - Windows has no process groups of this kind
        proc.send_signal(sig)


def start_transformers_serve(
    model_path: str | os.PathLike[str],
    port: int | None = None,
    timeout: float = 60.0,
    *,
    device: str | None = None,
    extra_args: Sequence[str] = (),
) -> tuple[ServeProcess, str]:
    """Start ``transformers serve`` for one model on 127.0.0.1 and wait until it answers.

    Args:
        model_path: A local checkpoint folder (passed as an absolute path, with the Hub set
            offline) or a Hub model id.
        port: TCP port; a free one is picked if omitted (and re-picked if another process takes it
            before the server binds).
        timeout: Seconds to wait for ``/health``, model loading included. Startup is dominated by
            importing torch/transformers: about 10 s for the tiny test model on 2 CPU cores.
        device: ``--device`` value (``"cpu"``, ``"cuda:0"``, ...); the server's default (``auto``)
            if omitted.
        extra_args: More ``transformers serve`` flags, e.g. ``["--dtype", "bfloat16"]``.

    Returns:
        ``(process, base_url)`` with ``base_url`` = ``http://127.0.0.1:PORT/v1``, ready for an
        OpenAI client. Stop the process with :func:`stop_transformers_serve`, or use
        :func:`transformers_serve` instead.

    Raises:
        RuntimeError: The server exited during startup (the message holds the end of its log).
        TimeoutError: It did not become healthy within ``timeout`` seconds (it is stopped first).
    """
    import httpx

    local = pathlib.Path(model_path).expanduser()
    if local.exists():
        model = str(local.resolve())
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # never look a local folder up on the Hub
    else:
        model = os.fspath(model_path)
        env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"

    attempts = 1 if port is not None else 3
    deadline = time.monotonic() + timeout
    for attempt in range(attempts):
        chosen = port if port is not None else _free_port()
        fd, log_name = tempfile.mkstemp(prefix="transformers-serve-", suffix=".log")
        log_path = pathlib.Path(log_name)
        cmd = [
            sys.executable, "-c", _CLI, "serve", model,
            "--host", _HOST, "--port", str(chosen),
            *(["--device", device] if device is not None else []),
            *extra_args,
        ]  # fmt: skip
        with os.fdopen(fd, "wb") as log:
            proc = ServeProcess(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        proc.log_path = log_path
        proc.model = model
        proc.base_url = f"http://{_HOST}:{chosen}/v1"
        health = f"http://{_HOST}:{chosen}/health"

        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while True:
                if proc.poll() is not None:
                    tail = _log_tail(log_path)
                    stop_transformers_serve(proc)
                    if "address already in use" in tail.lower() and attempt + 1 < attempts:
                        break  # someone took the port we picked; try another
                    raise RuntimeError(
                        f"transformers serve exited with code {proc.returncode} during startup:\n{tail}"
                    )
                try:
                    if client.get(health).status_code == 200:
                        return proc, proc.base_url
                except httpx.TransportError:
                    pass  # not listening yet
                if time.monotonic() > deadline:
                    tail = _log_tail(log_path)
                    stop_transformers_serve(proc)
                    raise TimeoutError(f"transformers serve was not healthy after {timeout:.0f} s:\n{tail}")
                time.sleep(0.2)
    raise AssertionError("unreachable")  # pragma: no cover


@contextlib.contextmanager
def transformers_serve(
    model_path: str | os.PathLike[str],
    port: int | None = None,
    timeout: float = 60.0,
    *,
    device: str | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[str]:
    """Run ``transformers serve`` on 127.0.0.1 for the duration of a ``with`` block.

    Yields the OpenAI-style base URL (``http://127.0.0.1:PORT/v1``). The server's process group is
    killed on exit, also when the block raises; the server log's tail is then attached to the
    exception as a note, since a failing request usually has its traceback only there.
    Arguments are those of :func:`start_transformers_serve`.
    """
    proc, base_url = start_transformers_serve(
        model_path, port=port, timeout=timeout, device=device, extra_args=extra_args
    )
    try:
        yield base_url
    except BaseException as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"transformers serve log (tail):\n{_log_tail(proc.log_path)}")
        raise
    finally:
        stop_transformers_serve(proc)
