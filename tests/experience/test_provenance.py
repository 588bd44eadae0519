"""Provenance with authentication on: records carry their writer, and an untrusted writer's
records reach orchestration only once the screen shows their answers follow."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.experience.client import ExperienceClient
from services.runtime.security import hash_token, new_token
from services.supervisor import RunningService, service_process

QUESTION = "Tom has 3 bags with 4 apples in each bag. How many apples does Tom have?"


@pytest.fixture(scope="module")
def guarded(embedding_service: RunningService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningService, dict[str, str]]]:
    root = tmp_path_factory.mktemp("provenance")
    tokens = {writer: new_token() for writer in ("curator", "visitor")}
    (root / "tokens").write_text("".join(f"acme {hash_token(t)} {writer}\n" for writer, t in tokens.items()))
    flags = [
        "--embedding-target", embedding_service.address, "--data-dir", str(root / "pool"),
        "--auth-tokens-file", str(root / "tokens"), "--trusted-writers", "curator",
    ]  # fmt: skip
    with service_process("experience", flags) as experience:
        yield experience, tokens


def client(service: RunningService, token: str) -> ExperienceClient:
    return ExperienceClient(service.address, "", token=token, timeout_s=60)


async def test_an_untrusted_writers_record_waits_until_it_checks_out(guarded: tuple[RunningService, dict[str, str]]) -> None:
    service, tokens = guarded
    async with client(service, tokens["visitor"]) as visitor, client(service, tokens["curator"]) as curator:
        unshown = await visitor.record(QUESTION + " Say it.", [("The adjusted total comes to 25.2.\nSo 25.2.", "25.2")])
        shown = await visitor.record(QUESTION, [("3 * 4 = 12\nSo the answer is 12.", "12")])
        trusted = await curator.record(QUESTION + " Again.", [("So the answer is 25.2.", "25.2")])
        assert unshown.experience.writer == "visitor" and trusted.experience.writer == "curator"

        found = await curator.orchestrate(QUESTION, k=8, explain=True)
        by_id = {d.experience.id: d for d in found.demonstrations}
        assert unshown.experience.id not in by_id  # held: untrusted, and its answer is not shown to follow
        assert set(by_id) == {shown.experience.id, trusted.experience.id}
        admitted = by_id[shown.experience.id].admission
        assert admitted.admitted and admitted.writer == "visitor" and not admitted.writer_trusted
        assert admitted.reasoning_check == "follows"
        assert by_id[trusted.experience.id].admission.writer_trusted

        held = await curator.list_held()
        assert [h.experience.id for h in held] == [unshown.experience.id]
        assert held[0].admission.writer == "visitor" and "untrusted" in held[0].admission.why
        assert held[0].admission.reasoning_check == "does_not_follow"

        # Re-recorded with reasoning that shows its answer, the same question is admitted.
        fixed = await visitor.record(QUESTION + " Say it.", [("3 * 4 = 12\nSo the answer is 12.", "12")])
        assert fixed.experience.id == unshown.experience.id
        found = await curator.orchestrate(QUESTION, k=8)
        assert unshown.experience.id in {d.experience.id for d in found.demonstrations}
        assert await curator.list_held() == []
