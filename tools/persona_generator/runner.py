"""Running the seven stages for one persona: in their dependency order, as
concurrently as the graph allows (every call under the pool's one bound),
each result checkpointed at ``<output>/<user_id>/persona/stages/NN_<name>.json``
(atomic). A run that failed at one stage resumes from it; ``regenerate`` starts
over. A failing stage fails the persona with an error naming it, after the
stages that do not need it have finished and been checkpointed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...utils.file_lock import atomic_write_json, read_json
from ...utils.llm import LLMClientPool, LLMContentError, LLMError
from ...utils.safe_paths import safe_join, validate_user_id
from ..persona_card import Persona
from .card import build_card
from .card_file import save_card
from .images import fingerprint, image_part, placeholder_portrait
from .prompts import PersonaBrief, parse_local_answer, stage_request
from .stages import CONTENT_ATTEMPTS, STAGES, Stage, StageContentError, validate_stage

logger = logging.getLogger("twitterchat.persona_generator")

MAX_CONCEPT_CHARS = 4000
MAX_LANGUAGE_CHARS = 40


class PersonaGenerationError(RuntimeError):
    """A persona that could not be generated; the message names the stage and the reason."""


class _DependencyFailed(Exception):
    pass


@dataclass(frozen=True)
class PersonaJob:
    """One persona to generate: a concept text and/or an image (a PIL image)."""

    user_id: str
    concept: str = ""
    image: Any = field(default=None, repr=False)
    language: str = "English"
    seed: int | None = None
    regenerate: bool = False


@dataclass
class PersonaResult:
    persona: Persona
    card: dict[str, Any] = field(repr=False)
    json_path: Path
    png_path: Path
    notes: list[str]
    resumed: list[str]          # stages read from their checkpoints
    generated: list[str]        # stages asked of the model in this run


StageListener = Callable[[Stage, str], None]   # (stage, "done" | "resumed")


def persona_folder(output_root: Path, user_id: str) -> Path:
    return safe_join(output_root, validate_user_id(user_id), "persona")


def _check_job(job: PersonaJob) -> tuple[str, str]:
    concept = (job.concept or "").strip()
    language = (job.language or "").strip() or "English"
    if not concept and job.image is None:
        raise PersonaGenerationError("give an image, a concept text, or both")
    if len(concept) > MAX_CONCEPT_CHARS:
        raise PersonaGenerationError(f"concept is {len(concept)} characters; at most {MAX_CONCEPT_CHARS}")
    if len(language) > MAX_LANGUAGE_CHARS or "\n" in language:
        raise PersonaGenerationError(f"language must be a short name like 'English' or 'zh-CN', "
                                     f"got {language[:60]!r}")
    return concept, language


class _Run:
    def __init__(self, pool: LLMClientPool, profile_name: str, job: PersonaJob, brief: PersonaBrief,
                 stages_dir: Path, inputs: dict[str, Any], local: bool, on_stage: StageListener | None) -> None:
        self.pool, self.profile_name, self.job, self.brief = pool, profile_name, job, brief
        self.stages_dir, self.inputs, self.local, self.on_stage = stages_dir, inputs, local, on_stage
        self.done: dict[str, dict[str, Any]] = {}
        self.resumed: list[str] = []
        self.generated: list[str] = []

    def load_checkpoints(self) -> None:
        for stage in STAGES:
            path = self.stages_dir / stage.checkpoint_name
            try:
                saved = read_json(path)
            except ValueError as exc:
                logger.warning("checkpoint %s is damaged (%s); that stage runs again", path.name, exc)
                continue
            if saved is None:
                continue
            if saved.get("inputs") != self.inputs:
                raise PersonaGenerationError(
                    f"{self.job.user_id}: the checkpoints in {self.stages_dir} were made from another "
                    "concept, image, language or LLM vision; set regenerate to start over")
            try:
                self.done[stage.name] = validate_stage(stage.name, saved.get("result") or {})
                self.resumed.append(stage.name)
            except StageContentError as exc:
                logger.warning("checkpoint %s no longer validates (%s); that stage runs again", path.name, exc)

    async def stage(self, stage: Stage) -> None:
        if stage.name in self.done:
            if self.on_stage is not None:
                self.on_stage(stage, "resumed")
            return
        problem = None
        for attempt in range(1, CONTENT_ATTEMPTS + 1):
            seed = None if self.job.seed is None else self.job.seed + stage.number * 100 + attempt
            request = stage_request(stage, self.brief, self.done, local=self.local, seed=seed, problem=problem)
            try:
                raw = await self.pool.complete(self.profile_name, request)
                result = validate_stage(stage.name, parse_local_answer(stage, raw) if self.local else raw)
            except (StageContentError, LLMContentError) as exc:
                problem = str(exc)
                logger.warning("%s: stage %d %s attempt %d unusable: %s", self.job.user_id, stage.number,
                               stage.name, attempt, problem)
                continue
            atomic_write_json(self.stages_dir / stage.checkpoint_name,
                              {"stage": stage.name, "inputs": self.inputs, "result": result})
            self.done[stage.name] = result
            self.generated.append(stage.name)
            if self.on_stage is not None:
                self.on_stage(stage, "done")
            return
        raise LLMContentError(f"no usable answer after {CONTENT_ATTEMPTS} attempts (last: {problem})")

    async def run_graph(self, sequential: bool) -> dict[str, BaseException]:
        """Every stage after the stages it needs; the failures by stage name."""
        if sequential:
            failures: dict[str, BaseException] = {}
            for stage in STAGES:
                if any(need in failures for need in stage.needs):
                    failures[stage.name] = _DependencyFailed()
                    continue
                try:
                    await self.stage(stage)
                except LLMError as exc:
                    failures[stage.name] = exc
            return failures
        tasks: dict[str, asyncio.Task] = {}

        async def after_needs(stage: Stage) -> None:
            for need in stage.needs:
                try:
                    await tasks[need]
                except (LLMError, _DependencyFailed):
                    raise _DependencyFailed() from None
            await self.stage(stage)

        for stage in STAGES:  # declared in an order where every need comes first
            tasks[stage.name] = asyncio.ensure_future(after_needs(stage))
        outcomes = await asyncio.gather(*tasks.values(), return_exceptions=True)
        failures = {}
        for name, outcome in zip(tasks, outcomes):
            if isinstance(outcome, (LLMError, _DependencyFailed)):
                failures[name] = outcome
            elif isinstance(outcome, BaseException):
                raise outcome
        return failures


async def generate_persona(pool: LLMClientPool, profile_name: str, job: PersonaJob, output_root: Path, *,
                           on_stage: StageListener | None = None, sequential: bool = False) -> PersonaResult:
    """Generate (or resume) one persona and save its card as JSON and PNG.

    ``sequential`` runs the stages one after another (the benchmark's baseline)."""
    user_id = validate_user_id(job.user_id)
    concept, language = _check_job(job)
    profile = pool.profile(profile_name)
    notes: list[str] = []
    sees = profile.sees_images
    if job.image is not None and not sees:
        if not concept:
            raise PersonaGenerationError(
                f"LLM profile {profile.name!r} cannot see images (vision is off), and there is no concept "
                "text: describe the persona in the concept, or use a vision profile")
        notes.append(f"LLM profile {profile.name!r} cannot see images: the image was not sent to the model; "
                     "the persona, its looks included, comes from the concept text only, and the card "
                     "says so (visual_profile.source = 'text'). The image is the card's picture.")
    seen = job.image is not None and sees
    brief = PersonaBrief(concept=concept, language=language, image=image_part(job.image) if seen else None)
    folder = persona_folder(output_root, user_id)
    stages_dir = folder / "stages"
    inputs = {"concept": concept, "language": language, "vision": seen,
              "image": fingerprint(job.image) if job.image is not None else None}
    if job.regenerate:
        for stage in STAGES:
            (stages_dir / stage.checkpoint_name).unlink(missing_ok=True)
    run = _Run(pool, profile_name, job, brief, stages_dir, inputs, profile.kind == "local", on_stage)
    run.load_checkpoints()
    started = time.monotonic()
    failures = await run.run_graph(sequential)
    if failures:
        failed = {name: exc for name, exc in failures.items() if not isinstance(exc, _DependencyFailed)}
        first = next(stage for stage in STAGES if stage.name in failed)
        waiting = [name for name, exc in failures.items() if isinstance(exc, _DependencyFailed)]
        kept = [stage.name for stage in STAGES if stage.name in run.done]
        raise PersonaGenerationError(
            f"{user_id}: stage {first.number} {first.name} failed: {failed[first.name]}"
            + (f"; not run because of it: {', '.join(waiting)}" if waiting else "")
            + f"; checkpointed: {', '.join(kept) or 'none'} (in {stages_dir}); run again to resume")
    card = build_card(user_id, run.done, language=language, visual_source="image" if seen else "text",
                      concept=concept, profile_name=profile.name)
    picture = job.image if job.image is not None else placeholder_portrait()
    json_path, png_path = await asyncio.to_thread(save_card, folder, user_id, card, picture)
    logger.info("persona %s (%s) generated in %.1fs: %d stage(s) asked, %d resumed; card %s",
                user_id, card["data"]["name"], time.monotonic() - started, len(run.generated),
                len(run.resumed), json_path)
    return PersonaResult(Persona(user_id=user_id, card=card), card, json_path, png_path, notes,
                         run.resumed, run.generated)
