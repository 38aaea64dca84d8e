"""Generators behind the refine loop: SPEC strings, the seeding convention, the OpenAI images API
(against local servers written for the test) and tiny random diffusers pipelines (t2i and edit)."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from PIL import Image, ImageStat
from typer.testing import CliRunner

from rationalrewards.cli.main import app
from rationalrewards.refine import (
    CallableGenerator,
    DiffusersGenerator,
    GeneratorError,
    GeneratorInputError,
    OpenAIImagesGenerator,
    generator_from_spec,
    load_trajectory,
    register_generator,
)
from rationalrewards.refine.generators import parse_kv_options
from rationalrewards.refine.toy import toy_generator
from rationalrewards.testing.judges import toy_critic
from rationalrewards.testing.scripted_server import Reply, ScriptedServer


def png(value: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buf, format="PNG")
    return buf.getvalue()


def grey(img: Image.Image) -> float:
    return ImageStat.Stat(img.convert("L")).mean[0]


# ------------------------------------------------------------------------------------------------
# SPEC strings and the python generator
# ------------------------------------------------------------------------------------------------


def test_specs_pick_the_generator_by_name():
    gen = generator_from_spec("python:rationalrewards.refine.toy:toy_generator")
    assert isinstance(gen, CallableGenerator) and gen.spec == "python:rationalrewards.refine.toy:toy_generator"
    oa = generator_from_spec("openai:http://127.0.0.1:9/v1#gpt-image-1", api_key="k", width=64, height=32)
    assert isinstance(oa, OpenAIImagesGenerator)
    assert (oa.base_url, oa.model, oa.size, oa.send_seed) == ("http://127.0.0.1:9/v1", "gpt-image-1", "64x32", True)
    assert not generator_from_spec("openai:https://api.openai.com/v1#gpt-image-1").send_seed
    df = generator_from_spec("diffusers:black-forest-labs/FLUX.1-dev", steps=4, width=64, height=64, api_key="ignored")
    assert isinstance(df, DiffusersGenerator) and df.steps == 4 and df._pipe is None  # loaded lazily


@pytest.mark.parametrize(("spec", "message"), [
    ("flux", "NAME:TARGET"),
    ("magic:thing", "unknown generator 'magic'"),
    ("python:", "no target"),
    ("python:no_such_module_xyz:fn", "cannot import"),
    ("python:rationalrewards.refine.toy:nope", "no attribute"),
    ("python:/nowhere/gen.py:fn", "not found"),
    ("openai:127.0.0.1:8000", "http"),
])
def test_bad_specs_are_input_errors_naming_the_problem(spec, message):
    with pytest.raises(GeneratorInputError, match=message):
        generator_from_spec(spec)


def test_python_generator_from_a_file_path_with_the_per_seed_convention(tmp_path):
    script = tmp_path / "my_gen.py"
    script.write_text(
        "from PIL import Image\n"
        "def make(request, *, seed):\n"
        "    return Image.new('L', (8, 8), seed * 10)\n"
    )
    gen = generator_from_spec(f"python:{script}:make")
    images = gen.generate("anything", seed=3, n=3)
    assert [grey(i) for i in images] == [30, 40, 50] and all(i.mode == "RGB" for i in images)
    with pytest.raises(GeneratorInputError, match="takes no 'source'"):
        gen.generate("x", source=Image.new("RGB", (8, 8)), seed=0, n=1)


def test_a_batched_callable_must_return_n_images():
    def bad(request, *, seed, n, source=None):
        return [Image.new("RGB", (4, 4))]

    with pytest.raises(GeneratorError, match="returned 1 image"):
        CallableGenerator(bad).generate("x", seed=0, n=2)
    with pytest.raises(GeneratorError, match="raised ZeroDivisionError"):
        CallableGenerator(lambda request, *, seed: 1 / 0).generate("x", seed=0, n=1)


def test_third_party_generators_register_by_name():
    register_generator("toyreg", lambda target, **opts: CallableGenerator(toy_generator, label=target))
    gen = generator_from_spec("toyreg:whatever")
    assert gen.describe()["callable"] == "whatever" and len(gen.generate("a", seed=0, n=2)) == 2


def test_kv_options_parse_json_values():
    assert parse_kv_options(["steps=4", "_auto_resize=false", "scale=3.5", "name=flux dev"]) == {
        "steps": 4, "_auto_resize": False, "scale": 3.5, "name": "flux dev"}
    with pytest.raises(GeneratorInputError):
        parse_kv_options(["novalue"])


# ------------------------------------------------------------------------------------------------
# OpenAI-compatible images API
# ------------------------------------------------------------------------------------------------


def test_openai_generations_one_request_per_seed_and_retries_on_503():
    attempts = {"n": 0}

    def images(req):
        attempts["n"] += 1
        if attempts["n"] == 1:
            return Reply(status=503, headers={"Retry-After": "0"})
        body = req.json
        return png(10 * body["seed"] + (100 if "bright" in body["prompt"] else 0))

    with ScriptedServer(image_responder=images) as server:
        gen = OpenAIImagesGenerator(server.base_url, "img-model", api_key="sk-test", size="16x16", backoff_base=0.01)
        out = gen.generate("a bright cat", seed=2, n=3)
        reqs = server.image_requests
        gen.close()
    assert sorted(grey(i) for i in out) == [120, 130, 140] and [grey(i) for i in out] == [120, 130, 140]
    ok = [r for r in reqs if r.json]
    assert sorted(r.json["seed"] for r in ok[-3:]) == [2, 3, 4]
    body = ok[-1].json
    assert body["model"] == "img-model" and body["n"] == 1 and body["size"] == "16x16"
    assert ok[-1].headers["authorization"] == "Bearer sk-test"


def test_openai_generations_refusals_are_generator_errors():
    with ScriptedServer(image_responder=lambda req: Reply(status=400, content="bad prompt")) as server:
        gen = OpenAIImagesGenerator(server.base_url, max_retries=0)
        with pytest.raises(GeneratorError, match=r"refused.*400"):
            gen.generate("x", seed=0, n=1)
    with ScriptedServer(image_responder=lambda req: Reply(body=b'{"data": []}')) as server, \
            pytest.raises(GeneratorError, match="without a 'data' list"):
        OpenAIImagesGenerator(server.base_url, max_retries=0).generate("x", seed=0, n=1)


class _EditsServer:
    """A tiny /v1/images/edits server (multipart in, b64 JSON out) built on http.server."""

    def __init__(self):
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
                msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + body)
                fields, files = {}, []
                for part in msg.iter_parts():
                    name = part.get_param("name", header="content-disposition")
                    if part.get_filename():
                        files.append((name, part.get_content_type(), part.get_payload(decode=True)))
                    else:
                        fields[name] = part.get_content()
                outer.requests.append({"path": self.path, "fields": fields, "files": files})
                source = Image.open(io.BytesIO(files[0][2]))
                value = int(grey(source)) + int(fields.get("seed", 0))
                payload = json.dumps({"data": [{"b64_json": base64.b64encode(png(value)).decode()}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_edits_send_the_source_as_multipart():
    source = Image.new("RGB", (16, 16), (50, 50, 50))
    with _EditsServer() as base_url:
        gen = OpenAIImagesGenerator(base_url, "edit-model")
        out = gen.generate("make it lighter", source=source, seed=5, n=2)
    assert sorted(grey(i) for i in out) == [55, 56]


def test_openai_edits_record_fields_and_files():
    server = _EditsServer()
    source = Image.new("RGB", (16, 16), (70, 70, 70))
    with server as base_url:
        OpenAIImagesGenerator(base_url, "edit-model").generate("make it lighter", source=[source, source], seed=1, n=1)
    req = server.requests[0]
    assert req["path"] == "/v1/images/edits"
    assert req["fields"]["prompt"] == "make it lighter" and req["fields"]["model"] == "edit-model"
    assert req["fields"]["seed"] == "1" and req["fields"]["n"] == "1"
    assert [(name, mime) for name, mime, _ in req["files"]] == [("image[]", "image/png")] * 2


async def test_the_loop_runs_on_the_openai_images_generator(tmp_path):
    from rationalrewards import RewardModel
    from rationalrewards.backends.openai_http import OpenAIBackend
    from rationalrewards.refine import RefineConfig, RefineLoop

    def images(req):  # brightness follows the request, like the toy generator
        return png(40 + 50 * req.json["prompt"].count("brighter"))

    with ScriptedServer(toy_critic(), image_responder=images) as server:
        critic = RewardModel(OpenAIBackend(server.base_url, "critic"))
        loop = RefineLoop(f"openai:{server.base_url}#img", critic, RefineConfig(rounds=2, candidates=2, threshold=None))
        traj = await loop.arun("a grey square", tmp_path / "out")
        await critic.aclose()
    assert traj.ok and [r.round_best_reward for r in traj.rounds] == sorted(r.round_best_reward for r in traj.rounds)
    assert traj.best.round == 2 and traj.generator["base_url"] == server.base_url


# ------------------------------------------------------------------------------------------------
# tiny diffusers pipelines
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pipelines(tmp_path_factory):
    pytest.importorskip("diffusers")
    from rationalrewards.testing.tiny_pipelines import build_tiny_flux, build_tiny_flux_kontext

    root = tmp_path_factory.mktemp("pipes")
    return {"t2i": build_tiny_flux(root / "flux"), "edit": build_tiny_flux_kontext(root / "kontext")}


def test_tiny_pipeline_builds_are_real_diffusers_folders_and_are_reused(tiny_pipelines, tmp_path):
    from rationalrewards.testing.tiny_pipelines import BUILD_MARKER, build_tiny_flux

    index = json.loads((tiny_pipelines["t2i"] / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert json.loads((tiny_pipelines["edit"] / "model_index.json").read_text())["_class_name"] == "FluxKontextPipeline"
    marker = (tiny_pipelines["t2i"] / BUILD_MARKER).stat().st_mtime_ns
    assert build_tiny_flux(tiny_pipelines["t2i"]) == tiny_pipelines["t2i"]
    assert (tiny_pipelines["t2i"] / BUILD_MARKER).stat().st_mtime_ns == marker  # not rebuilt
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        build_tiny_flux(tmp_path / "foreign")


def test_diffusers_generator_seeds_each_image_independently(tiny_pipelines):
    gen = DiffusersGenerator(str(tiny_pipelines["t2i"]), device="cpu", steps=2, width=32, height=32,
                             call_kwargs={"max_sequence_length": 32})
    pair = gen.generate("a red cat", seed=5, n=2)
    alone = gen.generate("a red cat", seed=6, n=1)
    gen.batch_size = 1  # chunked calls give the same images: seeds are per image
    chunked = gen.generate("a red cat", seed=5, n=2)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(chunked, pair, strict=True))
    assert [i.size for i in pair] == [(32, 32)] * 2
    assert np.array_equal(np.asarray(pair[1]), np.asarray(alone[0]))
    assert not np.array_equal(np.asarray(pair[0]), np.asarray(pair[1]))
    assert gen.describe()["pipeline"] == "FluxPipeline"
    with pytest.raises(GeneratorInputError, match="takes no source image"):
        gen.generate("a red cat", source=Image.new("RGB", (32, 32)), seed=0, n=1)


def test_diffusers_generator_reports_a_missing_folder_as_input_error(tmp_path):
    pytest.importorskip("diffusers")
    with pytest.raises(GeneratorInputError, match="not found"):
        DiffusersGenerator(str(tmp_path / "nope"), device="cpu").generate("x", seed=0, n=1)


def test_cli_refines_with_a_tiny_diffusers_t2i_pipeline(tiny_pipelines, tmp_path):
    out = tmp_path / "t2i"
    with ScriptedServer(toy_critic()) as server:
        result = CliRunner().invoke(app, [
            "refine", "--prompt", "a red cat", "--generator", f"diffusers:{tiny_pipelines['t2i']}", "--out", str(out),
            "--rounds", "1", "--candidates", "2", "--gen-device", "cpu", "--gen-steps", "2", "--gen-width", "32",
            "--gen-height", "32", "--gen-arg", "max_sequence_length=32", "--critic-base-url", server.base_url,
            "--critic-model", "critic", "--json",
        ])
    assert result.exit_code == 0, result.output
    line = json.loads(result.stdout.strip().splitlines()[-1])
    assert line["ok"] and line["rounds_run"] == 2 and line["generator_calls"] == 4
    traj = load_trajectory(out)
    assert traj.generator["pipeline"] == "FluxPipeline" and traj.generator["steps"] == 2
    assert Image.open(out / traj.best.image).size == (32, 32)


def test_cli_refines_an_edit_with_a_tiny_kontext_pipeline(tiny_pipelines, tmp_path):
    src = tmp_path / "src.png"
    Image.new("RGB", (32, 32), (90, 120, 150)).save(src)
    out = tmp_path / "edit"
    with ScriptedServer(toy_critic()) as server:
        result = CliRunner().invoke(app, [
            "refine", "--prompt", "make the sky brighter", "--source", str(src), "--generator",
            f"diffusers:{tiny_pipelines['edit']}", "--out", str(out), "--rounds", "1", "--candidates", "1",
            "--gen-device", "cpu", "--gen-steps", "2", "--gen-width", "32", "--gen-height", "32",
            "--gen-arg", "_auto_resize=false", "--gen-arg", "max_sequence_length=32",
            "--critic-base-url", server.base_url, "--critic-model", "critic",
        ])
        reqs = [r for r in server.requests if r.path == "/v1/chat/completions"]
    assert result.exit_code == 0, result.output
    traj = load_trajectory(out)
    assert traj.task == "edit" and traj.generator["pipeline"] == "FluxKontextPipeline" and traj.ok
    assert all(len(r.images()) == 2 and "User Instruction: make the sky brighter" in r.text("user") for r in reqs)
    assert "best" in result.stdout and "round" in result.stdout
