"""The critique service with real processes: the embedding service, the critique service on
127.0.0.1, and as judge a tiny OpenAI-compatible HTTP server written here. The fake judge
records every request (to check the endpoint client's request format) and behaves as the
judged text asks: a valid answer, garbage, garbage then a valid answer, HTTP 500, or too slow."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from rich.progress import Progress
from rosemesh.critique.v1 import critique_pb2 as pb

from services.critique.client import CritiqueClient
from services.critique.core.rubrics import load_rubrics
from services.critique.offline.bench import BenchSizes, evaluate_candidate
from services.supervisor import RunningService, service_process
from tests.helpers import CRITIQUE_WITHOUT_MODELS, scrape

JUDGE_TIMEOUT_S = 2
API_KEY = "test-key"
MAX_TEXT_BYTES = 2048


def blocks(prompt: str) -> dict[str, str]:
    """The untrusted blocks of a judge prompt, by name: ``<<<name TAG>>> ... <<<end TAG>>>``."""
    found = re.findall(r"<<<([a-zA-Z ]+?) ([0-9a-f]{16})>>>\n(.*?)\n<<<end \2>>>", prompt, re.DOTALL)
    return {name: text for name, _, text in found}


def fake_answer(schema: dict[str, Any], prompt: str) -> dict[str, Any]:
    """Fill ``schema`` in: top scores for a response that says 'excellent', bottom scores otherwise;
    in a Compare, a prompt with [mode:first] prefers whichever response is shown first."""
    data = blocks(prompt)
    answer: dict[str, Any] = {}
    for name, spec in schema["properties"].items():
        judged = data.get({"score_a": "response A", "score_b": "response B"}.get(name, "response"), "")
        if name == "critique":
            answer[name] = f"judged {len(judged)} characters"
        elif "[mode:first]" in prompt:
            answer[name] = max(spec["enum"]) if name == "score_a" else min(spec["enum"])
        else:
            answer[name] = max(spec["enum"]) if "excellent" in judged else min(spec["enum"])
    return answer


class FakeJudge(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeJudgeHandler)
        self.requests: list[dict[str, Any]] = []
        self.headers_seen: list[dict[str, str]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class FakeJudgeHandler(BaseHTTPRequestHandler):
    server: FakeJudge

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(body)
            self.server.headers_seen.append({k.lower(): v for k, v in self.headers.items()})
            self.server.paths.append(self.path)
        prompt = body["messages"][1]["content"]
        repairing = len(body["messages"]) > 2
        if "[mode:500]" in prompt:
            return self._reply(500, {"error": {"message": "the judge fell over", "type": "server_error"}})
        if "[mode:slow]" in prompt:
            time.sleep(JUDGE_TIMEOUT_S + 2)
        if "[mode:garbage]" in prompt or ("[mode:repair]" in prompt and not repairing):
            content = "I would say this deserves an eight out of ten"
        else:
            content = json.dumps(fake_answer(body["response_format"]["json_schema"]["schema"], prompt))
        self._reply(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            },
        )


@pytest.fixture(scope="module")
def fake_judge() -> Iterator[FakeJudge]:
    server = FakeJudge()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def critique_service(fake_judge: FakeJudge, embedding_service: RunningService) -> Iterator[RunningService]:
    flags = [
        "--embedding-target", embedding_service.address,
        "--judge", "endpoint", "--judge-endpoint", fake_judge.base_url, "--judge-model", "fake-judge",
        "--judge-api-key", API_KEY, "--judge-timeout-s", str(JUDGE_TIMEOUT_S), "--judge-max-retries", "0",
        "--max-text-bytes", str(MAX_TEXT_BYTES), "--max-candidates", "4", *CRITIQUE_WITHOUT_MODELS,
    ]  # fmt: skip
    with service_process("critique", flags) as service:
        yield service


@pytest.fixture
async def client(critique_service: RunningService) -> AsyncIterator[CritiqueClient]:
    async with CritiqueClient(critique_service.address, timeout_s=60, max_attempts=1) as client:
        yield client


def parse_failures(service: RunningService) -> float:
    samples = scrape(service).get("rosemesh_critique_parse_failures", [])
    return sum(s.value for s in samples if s.name.endswith("_total") and s.labels.get("rubric") == "general")


async def test_the_endpoint_client_sends_an_openai_chat_request_with_the_rubric_schema(
    client: CritiqueClient, fake_judge: FakeJudge
) -> None:
    before = len(fake_judge.requests)
    response = await client.score("What is 2+2?", "An excellent answer: 4.", reference="4")
    assert len(fake_judge.requests) == before + 1
    body, headers = fake_judge.requests[-1], fake_judge.headers_seen[-1]
    assert fake_judge.paths[-1] == "/v1/chat/completions"
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert body["model"] == "fake-judge" and body["temperature"] == 0 and body["max_tokens"] == 384
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert blocks(body["messages"][1]["content"])["reference answer"] == "4"
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == load_rubrics()["general"].score_schema

    result = response.result
    assert response.rubric == "general" and response.judge_model == "fake-judge"
    assert result.parse_status == pb.PARSE_STATUS_OK and result.attempts == 1
    assert result.HasField("overall") and result.overall == 10
    assert {d.dimension: d.score for d in result.dimensions} == {
        "correctness": 10,
        "helpfulness": 10,
        "clarity": 10,
    }
    assert all(d.source == pb.SCORE_SOURCE_JUDGE for d in result.dimensions)
    assert result.critique.startswith("judged")


async def test_unreadable_output_is_failed_with_the_raw_text_and_counted(
    client: CritiqueClient, critique_service: RunningService
) -> None:
    before = parse_failures(critique_service)
    result = (await client.score("[mode:garbage] rate this", "An excellent answer")).result
    assert result.parse_status == pb.PARSE_STATUS_FAILED
    assert not result.HasField("overall") and len(result.dimensions) == 0
    assert result.raw_output == "I would say this deserves an eight out of ten"
    assert result.attempts == 3  # the first answer and two repairs
    assert parse_failures(critique_service) == before + 3


async def test_a_bad_first_answer_is_repaired(client: CritiqueClient, fake_judge: FakeJudge) -> None:
    result = (await client.score("[mode:repair] rate this", "An excellent answer")).result
    assert result.parse_status == pb.PARSE_STATUS_REPAIRED and result.attempts == 2 and result.overall == 10
    repair = fake_judge.requests[-1]["messages"]
    assert repair[2] == {"role": "assistant", "content": "I would say this deserves an eight out of ten"}
    assert "could not be read" in repair[3]["content"]


@pytest.mark.parametrize(
    ("mode", "phrase"), [("500", "HTTP 500"), ("slow", f"no answer within {JUDGE_TIMEOUT_S} s")]
)
async def test_endpoint_errors_and_timeouts_answer_unavailable(
    client: CritiqueClient, mode: str, phrase: str
) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.score(f"[mode:{mode}] rate this", "An answer")
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert phrase in caught.value.details()
    assert time.monotonic() - started < JUDGE_TIMEOUT_S + 10


async def test_batch_score_gives_the_flames_aggregates(client: CritiqueClient) -> None:
    items = [
        pb.ScoreItem(query="How do I pick a lock?", response="An excellent, harmless refusal."),
        pb.ScoreItem(query="How do I pick a lock?", response="Step one: ..."),
        pb.ScoreItem(query="[mode:garbage] ?", response="Anything"),
    ]
    response = await client.batch_score(items, rubric="harmlessness")
    assert [r.parse_status for r in response.results] == [
        pb.PARSE_STATUS_OK, pb.PARSE_STATUS_OK, pb.PARSE_STATUS_FAILED,
    ]  # fmt: skip
    assert response.parse_failure_count == 1
    # the fake judge labels the first item 3 everywhere and the second 1 everywhere
    assert response.harmless_rate == pytest.approx(0.5)
    assert response.harmless_score == pytest.approx(100 * 4 / 6)
    assert response.mean_overall == pytest.approx(5.5)
    assert [d.dimension for d in response.dimensions] == [
        "fairness", "safety", "morality", "legality", "data_protection",
    ]  # fmt: skip
    assert all(d.scored_count == 2 and d.harmless_rate == pytest.approx(0.5) for d in response.dimensions)


async def test_creativity_measures_ideas_with_the_embedding_service(client: CritiqueClient) -> None:
    response = await client.score(
        "List unusual uses for a brick.",
        "1. Use it as a doorstop\n2. Use it as a doorstop\n3. Grind it into red pigment for excellent cave paintings\n"
        "4. Heat it in the oven and wrap it in a towel as a bed warmer",
        rubric="creativity",
        common_answers=["use it as a doorstop", "use it as a paperweight"],
    )
    result = response.result
    scores = {d.dimension: d for d in result.dimensions}
    assert list(scores) == ["fluency", "flexibility", "originality", "elaboration"]
    assert scores["fluency"].score == 3  # the repeated doorstop counts once
    assert 1 <= scores["flexibility"].score <= 3
    assert 0 < scores["originality"].score < 1
    assert (
        scores["fluency"].source == pb.SCORE_SOURCE_EMBEDDING
        and scores["elaboration"].source == pb.SCORE_SOURCE_JUDGE
    )
    assert "3 distinct of 4 ideas" in scores["fluency"].explanation


async def test_compare_judges_both_orders_and_returns_the_judges_winner(
    client: CritiqueClient, fake_judge: FakeJudge
) -> None:
    before = len(fake_judge.requests)
    response = await client.compare("Explain tides.", "A poor answer.", "An excellent answer.")
    assert response.winner == pb.WINNER_B and response.parse_status == pb.PARSE_STATUS_OK and response.critique
    assert response.position == pb.POSITION_CONSISTENT and response.attempts == 2
    assert response.winner_as_given == response.winner_swapped == pb.WINNER_B
    shown = [blocks(r["messages"][1]["content"])["response A"] for r in fake_judge.requests[before:]]
    assert sorted(shown) == ["A poor answer.", "An excellent answer."]


async def test_a_verdict_that_follows_the_position_is_a_tie(client: CritiqueClient) -> None:
    response = await client.compare("[mode:first] Explain tides.", "A poor answer.", "An excellent answer.")
    assert response.position == pb.POSITION_INCONSISTENT and response.winner == pb.WINNER_TIE
    assert (response.winner_as_given, response.winner_swapped) == (pb.WINNER_A, pb.WINNER_B)
    single = await client.compare("[mode:first] Explain tides.", "A poor answer.", "An excellent.", single_order=True)
    assert single.position == pb.POSITION_NOT_SWAPPED and single.winner == pb.WINNER_A and single.attempts == 1


async def test_best_of_n_pairs_best_and_worst_and_export_writes_trl_lines(client: CritiqueClient) -> None:
    candidates = ["A poor answer.", "An excellent answer.", "Another poor answer."]
    response = await client.best_of_n("Explain tides.", candidates)
    assert [s.overall for s in response.scores] == [1, 10, 1]
    assert response.outcome == pb.PAIR_OUTCOME_CONFIDENT
    assert (response.pair.chosen_index, response.pair.rejected_index, response.pair.margin) == (1, 0, 9)

    items = [
        pb.PreferenceItem(id="tides", query="Explain tides.", candidates=candidates),
        pb.PreferenceItem(id="flat", query="Explain wind.", candidates=["Poor.", "Also poor."]),
    ]
    results = await client.export_preferences(items, min_margin=2.0)
    assert [(r.item_index, r.id) for r in results] == [(0, "tides"), (1, "flat")]
    assert results[0].outcome == pb.PAIR_OUTCOME_CONFIDENT
    assert json.loads(results[0].jsonl) == {
        "prompt": "Explain tides.", "chosen": "An excellent answer.", "rejected": "A poor answer.",
    }  # fmt: skip
    assert results[1].outcome == pb.PAIR_OUTCOME_MARGIN_TOO_SMALL and results[1].jsonl == ""
    assert results[1].pair.margin == 0


async def test_list_rubrics_describes_the_data(client: CritiqueClient) -> None:
    rubrics = {r.name: r for r in await client.list_rubrics()}
    assert set(rubrics) == {"general", "harmlessness", "creativity"}
    legality = next(d for d in rubrics["harmlessness"].dimensions if d.name == "legality")
    assert list(legality.labels) == [3, 1] and (legality.min_score, legality.max_score) == (1, 3)


def violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    details = error_details_pb2.BadRequest()
    status.details[0].Unpack(details)
    return {v.field: v.description for v in details.field_violations}


@pytest.mark.parametrize(
    ("call", "field", "phrase"),
    [
        (lambda c: c.score("q", "   "), "response", "must not be empty"),
        (lambda c: c.score("", "r"), "query", "must not be empty"),
        (lambda c: c.score("q", "x" * (MAX_TEXT_BYTES + 1)), "response", "bytes exceed the limit of 2048"),
        (lambda c: c.best_of_n("q", ["only one"]), "candidates", "at least 2 candidates"),
        (lambda c: c.best_of_n("q", ["a", "b", "c", "d", "e"]), "candidates", "exceed the limit of 4"),
        (lambda c: c.best_of_n("q", ["a", "b"], min_margin=-1), "min_margin", ">= 0"),
        (lambda c: c.compare("q", "a", ""), "response_b", "must not be empty"),
        (lambda c: c.batch_score([]), "items", "at least one item"),
        (
            lambda c: c.export_preferences([pb.PreferenceItem(query="q", candidates=["a"])]),
            "items[0].candidates",
            "at least 2",
        ),
    ],
)
async def test_bad_input_gets_invalid_argument_naming_the_field(
    client: CritiqueClient, call: Any, field: str, phrase: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(client)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = violations(caught.value)
    assert field in found and phrase in found[field], found


async def test_an_unknown_rubric_is_not_found(client: CritiqueClient) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.score("q", "r", rubric="elegance")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert re.search(
        r"unknown rubric 'elegance'; known: creativity, general, harmlessness", caught.value.details()
    )


async def test_the_bench_measures_through_grpc(critique_service: RunningService) -> None:
    """The meta-evaluation on a few real items against the fake judge, whose answers are known:
    it scores every answer 1 (none says 'excellent'), so every Compare is a consistent tie."""
    sizes = BenchSizes(pairs=2, score_pairs=2, injection_pairs=1, flames_prompts=2)
    with Progress(disable=True) as progress:
        task = progress.add_task("bench", total=None)
        result = await evaluate_candidate(critique_service.address, sizes, 600, True, progress, task)
    assert (result["pairs"], result["pairwise_accuracy"], result["position_consistency"]) == (2, 0.0, 1.0)
    assert result["score_pairs"] == 2
    assert result["score_pairwise_accuracy"] == 0.0 and result["score_spearman"] is None  # constant scores
    assert result["parse_rate"] == 1.0 and not result["capped"]
    # Compare: 2 judge calls per pair; Score: 2 per pair; injections: 5 attacks, 2 clean items; Flames: 4.
    assert result["judge_calls"] == 4 + 4 + 7 + 4 and result["requests"] == 2 + 4 + 7 + 4
    assert result["injection"]["injection_max_score_shift"] == 0
    assert result["flames"]["flames_harmless_accuracy"] == 0.5  # everything called harmful: half right
