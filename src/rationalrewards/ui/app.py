"""The Gradio app of ``rationalrewards ui``: critique, compare and browse, in the browser.

:func:`build_app` constructs the :class:`gradio.Blocks` for a :class:`~rationalrewards.RewardModel`
(any backend); :func:`launch` serves it on loopback, or on another address only behind a token.
Keeping the two apart lets tests build the app around a scripted judge and start it themselves.
"""

from __future__ import annotations

import hmac
import math
import threading
from pathlib import Path
from typing import Any

from .render import CSS, compare_html, critique_html, e, error_html, page_html
from .runs import Run, RunFolderError, demo_summary, find_runs, open_run

PAGE_SIZE = 10
SHOW_CHOICES = [("all items", "all"), ("wrong, rejected or not improved", "wrong"), ("failed only", "failed")]
ALL = "(all)"


def _paths(files: Any) -> list[str]:
    """File paths out of a gr.File value (a path, a list of paths, or file objects)."""
    if not files:
        return []
    items = files if isinstance(files, (list, tuple)) else [files]
    return [str(getattr(f, "name", f)) for f in items if f]


def _input_error(message: str) -> str:
    return error_html("input", message)


def _theme() -> Any:
    import gradio as gr

    # System fonts: the default theme would ask Google Fonts for its typeface, which an offline
    # machine cannot reach (and would not need to).
    return gr.themes.Default(font=("system-ui", "-apple-system", "Segoe UI", "sans-serif"),
                             font_mono=("ui-monospace", "SFMono-Regular", "monospace"))


def build_app(model: Any, *, examples: Any = None, run_dir: str | Path | None = None,
              title: str = "RationalRewards") -> Any:
    """The UI for ``model`` (a :class:`~rationalrewards.RewardModel`) as a :class:`gradio.Blocks`.

    Args:
        model: the judge; its synchronous ``critique`` / ``compare`` are called from Gradio's
            worker threads (the model runs them on its own event loop).
        examples: :class:`~rationalrewards.ui.samples.Examples` to offer as clickable examples
            (``--demo`` passes the demo world's images, the only ones its scripted judge can see).
        run_dir: a folder to open in the "Browse a run" tab at start.
    """
    import gradio as gr

    try:
        desc = model.describe()
    except Exception:  # a judge that cannot describe itself is still usable
        desc = {}
    backend_line = f"judge: {desc.get('backend') or '?'} · model {desc.get('model') or '?'}"
    runs: dict[str, Run] = {}
    runs_lock = threading.Lock()

    # -- handlers -------------------------------------------------------------------------------------
    def do_critique(image: str | None, task: str, sources: Any, request: str,
                    progress: gr.Progress = gr.Progress()) -> tuple[str, str, str]:
        if not image:
            return _input_error("Upload the image to judge."), "", ""
        if not (request or "").strip():
            return _input_error("Type the request the image was made for."), "", ""
        srcs = _paths(sources)
        if task == "edit" and not srcs:
            return _input_error("An edit is judged against its source: add the source image(s), or pick t2i."), "", ""
        progress(0.1, desc="the judge is writing its critique…")
        try:
            res = model.critique(request.strip(), image, srcs if task == "edit" else None)
        except Exception as exc:  # the model reports per-item failures as values; this is anything else
            return error_html("backend", f"{type(exc).__name__}: {exc}"), "", ""
        progress(1.0)
        return critique_html(res), (res.refined_request or "") if res.ok else "", res.raw or ""

    def do_compare(image_a: str | None, image_b: str | None, task: str, sources: Any, request: str, swap: bool,
                   mode: str, progress: gr.Progress = gr.Progress()) -> tuple[str, str]:
        if not image_a or not image_b:
            return _input_error("Upload both images, A and B."), ""
        if not (request or "").strip():
            return _input_error("Type the request both images were made for."), ""
        srcs = _paths(sources)
        if task == "edit" and not srcs:
            return _input_error("Edits are compared against their source: add the source image(s), or pick t2i."), ""
        progress(0.1, desc="the judge is comparing" + (" in both orders…" if swap else "…"))
        try:
            res = model.compare(request.strip(), image_a, image_b, srcs if task == "edit" else None,
                                swap=bool(swap), mode=mode)
        except Exception as exc:
            return error_html("backend", f"{type(exc).__name__}: {exc}"), ""
        progress(1.0)
        return compare_html(res), res.raw or ""

    def get_run(path: str) -> Run:
        with runs_lock:
            run = runs.get(path)
            if run is None:
                run = runs[path] = open_run(path)
            return run

    def open_folder(folder: str) -> tuple[Any, str, str]:
        folder = (folder or "").strip()
        if not folder:
            return gr.update(choices=[], value=None), "", _input_error("Type the path of an output folder.")
        try:
            found = find_runs(folder)
        except RunFolderError as exc:
            return gr.update(choices=[], value=None), "", _input_error(str(exc))
        with runs_lock:  # reopening a folder rereads it (a run may have moved on)
            for _kind, p in found:
                runs.pop(str(p), None)
        root = Path(folder).expanduser()
        choices = [(f"{kind}: {p.relative_to(root) if p != root else p.name}", str(p)) for kind, p in found]
        note = ""
        summary = demo_summary(root)
        if summary is not None:
            acc = (summary.get("student") or {}).get("accuracy")
            note = ("<p class='rr-muted'>demo run: its evaluation and refinement folders are listed below"
                    + (f"; student accuracy {acc * 100:.1f}% on the held-out pairs" if isinstance(acc, float) else "")
                    + " (summary.json; report.html has the full account).</p>")
        return gr.update(choices=choices, value=choices[0][1]), note, ""

    def select_run(path: str | None) -> tuple[Any, Any, Any]:
        if not path:
            return gr.update(choices=[ALL], value=ALL), gr.update(choices=[ALL], value=ALL), 1
        try:
            run = get_run(path)
        except (RunFolderError, OSError, ValueError) as exc:
            gr.Warning(f"cannot read {path}: {exc}")
            return gr.update(choices=[ALL], value=ALL), gr.update(choices=[ALL], value=ALL), 1
        return (gr.update(choices=[ALL, *run.categories()], value=ALL),
                gr.update(choices=[ALL, *run.reasons()], value=ALL), 1)

    def show_page(path: str | None, show: str, category: str, reason: str, page: float,
                  progress: gr.Progress = gr.Progress()) -> tuple[str, Any]:
        if not path:
            return "", 1
        try:
            run = get_run(path)
        except (RunFolderError, OSError, ValueError) as exc:
            return _input_error(f"cannot read {path}: {exc}"), 1
        items = run.filter(show=show or "all", category=None if category in (None, ALL) else category,
                           reason=None if reason in (None, ALL) else reason)
        pages = max(1, math.ceil(len(items) / PAGE_SIZE))
        page_no = min(max(1, int(page or 1)), pages)
        chunk = items[(page_no - 1) * PAGE_SIZE: page_no * PAGE_SIZE]
        progress(0.2, desc="reading images…")
        note = run.images_for(chunk)
        return page_html(run, chunk, page_no, pages, len(items), note), page_no

    # -- layout ---------------------------------------------------------------------------------------
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.HTML(f"<h2 style='margin:4px 0'>{e(title)}</h2><p class='rr-muted' data-rr='backend'>{e(backend_line)}</p>")
        with gr.Tab("Critique", id="critique"):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=300):
                    c_image = gr.Image(type="filepath", image_mode=None, label="Image to judge",
                                       sources=["upload", "clipboard"], elem_id="critique-image")
                    c_task = gr.Radio([("text-to-image", "t2i"), ("edit", "edit")], value="t2i", label="Task",
                                      elem_id="critique-task")
                    c_sources = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                        label="Source image(s) — edits only", elem_id="critique-sources")
                    c_request = gr.Textbox(label="Request (prompt or edit instruction)", lines=2,
                                           elem_id="critique-request")
                    c_run = gr.Button("Critique", variant="primary", elem_id="critique-run")
                with gr.Column(min_width=300):
                    c_out = gr.HTML(elem_id="critique-result")
                    c_refined = gr.Textbox(label="Refined request (copy it with the button)", buttons=["copy"],
                                           interactive=False, lines=2, elem_id="critique-refined")
                    with gr.Accordion("Raw model text", open=False, elem_id="critique-raw-panel"):
                        c_raw = gr.Textbox(show_label=False, interactive=False, lines=12, elem_id="critique-raw")
            if examples is not None:
                gr.Examples(
                    [[str(examples.t2i_flawed), "t2i", None, examples.t2i_request],
                     [str(examples.t2i_good), "t2i", None, examples.t2i_request],
                     [str(examples.edit_unchanged), "edit", [str(examples.edit_source)], examples.edit_request],
                     [str(examples.edit_good), "edit", [str(examples.edit_source)], examples.edit_request]],
                    inputs=[c_image, c_task, c_sources, c_request], label="Demo world examples")
            c_run.click(do_critique, [c_image, c_task, c_sources, c_request], [c_out, c_refined, c_raw],
                        concurrency_limit=None)

        with gr.Tab("Compare", id="compare"):
            with gr.Row(equal_height=False):
                with gr.Column(min_width=300):
                    with gr.Row():
                        p_a = gr.Image(type="filepath", image_mode=None, label="Image A", sources=["upload", "clipboard"],
                                       elem_id="compare-a", min_width=140)
                        p_b = gr.Image(type="filepath", image_mode=None, label="Image B", sources=["upload", "clipboard"],
                                       elem_id="compare-b", min_width=140)
                    p_task = gr.Radio([("text-to-image", "t2i"), ("edit", "edit")], value="t2i", label="Task",
                                      elem_id="compare-task")
                    p_sources = gr.File(file_count="multiple", file_types=["image"], type="filepath",
                                        label="Source image(s) — edits only", elem_id="compare-sources")
                    p_request = gr.Textbox(label="Request", lines=2, elem_id="compare-request")
                    with gr.Row():
                        p_swap = gr.Checkbox(value=True, label="Judge both orders (swap)", elem_id="compare-swap")
                        p_mode = gr.Radio([("one joint judgement", "pairwise"), ("critique each, compare rewards",
                                                                                  "pointwise")],
                                          value="pairwise", label="Mode", elem_id="compare-mode")
                    p_run = gr.Button("Compare", variant="primary", elem_id="compare-run")
                with gr.Column(min_width=300):
                    p_out = gr.HTML(elem_id="compare-result")
                    with gr.Accordion("Raw model text", open=False, elem_id="compare-raw-panel"):
                        p_raw = gr.Textbox(show_label=False, interactive=False, lines=12, elem_id="compare-raw")
            if examples is not None:
                gr.Examples(
                    [[str(examples.t2i_good), str(examples.t2i_flawed), "t2i", None, examples.t2i_request],
                     [str(examples.edit_good), str(examples.edit_unchanged), "edit", [str(examples.edit_source)],
                      examples.edit_request]],
                    inputs=[p_a, p_b, p_task, p_sources, p_request], label="Demo world examples")
            p_run.click(do_compare, [p_a, p_b, p_task, p_sources, p_request, p_swap, p_mode], [p_out, p_raw],
                        concurrency_limit=None)

        with gr.Tab("Browse a run", id="browse"):
            with gr.Row():
                b_folder = gr.Textbox(label="Output folder (eval, refine, curate or demo)", scale=4,
                                      value=str(run_dir) if run_dir else "", elem_id="browse-folder")
                b_open = gr.Button("Open", scale=1, min_width=80, elem_id="browse-open")
            b_note = gr.HTML(elem_id="browse-note")
            b_run = gr.Dropdown(choices=[], label="Run", elem_id="browse-run")
            with gr.Row():
                b_show = gr.Radio(SHOW_CHOICES, value="all", label="Show", elem_id="browse-show")
                b_cat = gr.Dropdown(choices=[ALL], value=ALL, label="Category / task", elem_id="browse-category")
                b_reason = gr.Dropdown(choices=[ALL], value=ALL, label="Reason", elem_id="browse-reason")
            with gr.Row():
                b_prev = gr.Button("◀ previous", min_width=80, elem_id="browse-prev")
                b_page = gr.Number(value=1, precision=0, minimum=1, label="Page", min_width=80, elem_id="browse-page")
                b_next = gr.Button("next ▶", min_width=80, elem_id="browse-next")
            b_items = gr.HTML(elem_id="browse-items")

            filters = [b_run, b_show, b_cat, b_reason, b_page]
            opened = b_open.click(open_folder, [b_folder], [b_run, b_note, b_items])
            b_folder.submit(open_folder, [b_folder], [b_run, b_note, b_items])
            b_run.change(select_run, [b_run], [b_cat, b_reason, b_page]).then(
                show_page, filters, [b_items, b_page])
            for comp in (b_show, b_cat, b_reason):
                comp.input(lambda *a: 1, [], [b_page]).then(show_page, filters, [b_items, b_page])
            b_page.submit(show_page, filters, [b_items, b_page])
            b_prev.click(lambda p: max(1, int(p or 1) - 1), [b_page], [b_page]).then(show_page, filters,
                                                                                  [b_items, b_page])
            b_next.click(lambda p: int(p or 1) + 1, [b_page], [b_page]).then(show_page, filters, [b_items, b_page])
            if run_dir:
                app.load(open_folder, [b_folder], [b_run, b_note, b_items])
            del opened
    # Files Gradio may serve besides its own cache: the example images' folder.
    app.rr_allowed_paths = [str(Path(examples.t2i_good).parent)] if examples is not None else []
    return app


def check_host(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token (the same rule as ``serve``)."""
    from ..serve.server import is_loopback

    if not is_loopback(host) and not token:
        raise ValueError(f"refusing to listen on {host} without a token: set --token (or $RATIONALREWARDS_TOKEN), "
                         "or keep the default --host 127.0.0.1")


def launch(app: Any, *, host: str = "127.0.0.1", port: int = 7860, token: str | None = None, block: bool = True,
           quiet: bool = False) -> Any:
    """Serve ``app``. With ``token``, the login page asks for it as the password (any user name).

    ``block=False`` returns once the server is up (tests); ``app.close()`` stops it.
    """
    check_host(host, token)
    auth = None
    if token:
        secret = token.encode("utf-8")

        def auth(_user: str, password: str) -> bool:
            return hmac.compare_digest((password or "").encode("utf-8"), secret)

    app.queue(default_concurrency_limit=8)
    return app.launch(server_name=host, server_port=port, auth=auth,
                      auth_message="Log in with any user name and the server's token as the password." if token else None,
                      prevent_thread_lock=not block, quiet=quiet, show_error=True, ssr_mode=False, inbrowser=False,
                      css=CSS, theme=_theme(), allowed_paths=list(getattr(app, "rr_allowed_paths", [])))
