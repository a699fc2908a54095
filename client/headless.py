"""``twitterchat persona generate`` and ``twitterchat posts``: the pack's own tools run
in this process, without ComfyUI or a server, under one LLM pool (its
``--max-concurrent`` is the one bound on LLM calls for the whole command).

Exit status: 0 when everything asked was done, 1 when a persona or a day failed,
2 for usage errors.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any, Callable

from ..tools.persona_card import Persona, card_from_json_text
from ..utils.safe_paths import UnsafePathError, validate_user_id

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
EXIT_OK, EXIT_FAILED = 0, 1


class HeadlessUsageError(ValueError):
    """Bad input found after parsing: exit status 2."""


def add_commands(command: Callable[[str, str], argparse.ArgumentParser], common: argparse.ArgumentParser,
                 days_type: Callable[[str], int]) -> None:
    """Adds ``persona generate`` and ``posts`` to the ``twitterchat`` parser."""
    persona = command("persona", "generate persona cards here (no server needed)")
    persona_commands = persona.add_subparsers(dest="persona_command", required=True, metavar="ACTION")
    generate = persona_commands.add_parser("generate", parents=[common],
                                           help="an image and/or a concept -> a character card (seven stages)",
                                           description="Generate a chara_card_v2 persona (JSON and PNG card) from "
                                                       "an image and/or a concept text, here, with the pack's LLM "
                                                       "profiles; a run resumes from its checkpoints.")
    source = generate.add_mutually_exclusive_group()
    source.add_argument("--image", type=Path, help="a picture of the persona")
    source.add_argument("--images", type=Path, metavar="DIR",
                        help="one persona per image in DIR (user id = file name without suffix), all at once")
    generate.add_argument("--concept", default="", help="who the persona is (with --images: for every one)")
    generate.add_argument("--user-id", help="the persona's account id (not with --images)")
    generate.add_argument("--language", default="English")
    generate.add_argument("--output", type=Path, help="output folder (default: OUTPUT_DIR / config / ./output)")
    _llm_options(generate)
    generate.add_argument("--regenerate", action="store_true", help="start over instead of resuming")

    posts = command("posts", "write posts for many persona cards here (no server needed)")
    posts.add_argument("--personas", required=True, nargs="+", action="extend", metavar="GLOB",
                       help="card files (.json or .png); globs are expanded here, quote them")
    posts.add_argument("--days", required=True, type=days_type, help="posts for this many days (1-31)")
    posts.add_argument("--start-day-offset", type=int, default=0, help="first day, counted from today")
    posts.add_argument("--output", required=True, type=Path, help="output folder (<user_id>/<date>/ below it)")
    posts.add_argument("--weather", action="store_true", help="ask the weather provider for each day")
    _llm_options(posts)


def _llm_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--llm-profile", default="auto", help="an LLM profile from config.json (default auto)")
    parser.add_argument("--max-concurrent", type=int, default=None,
                        help="LLM calls in flight at once, for the whole command (default llm.max_concurrent)")
    parser.add_argument("--seed", type=int, default=None)


def _pool(args: argparse.Namespace):
    from ..utils.llm import LLMClientPool

    if args.max_concurrent is not None and not 1 <= args.max_concurrent <= 1000:
        raise HeadlessUsageError("--max-concurrent must be between 1 and 1000")
    return LLMClientPool(max_concurrent=args.max_concurrent)


def _bar(total: int, unit: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, disable=True if quiet else None)


def _emit(args: argparse.Namespace, value: Any, lines: list[str]) -> None:
    if args.json:
        print(json.dumps(value, indent=2, ensure_ascii=False))
    else:
        for line in lines:
            print(line)


# -- persona generate -----------------------------------------------------------

def _persona_jobs(args: argparse.Namespace):
    from ..tools.persona_generator import PersonaImageError, PersonaJob, open_image

    try:
        if args.images is not None:
            if args.user_id:
                raise HeadlessUsageError("--user-id goes with --image; with --images each user id is the "
                                         "image's file name")
            if not args.images.is_dir():
                raise HeadlessUsageError(f"--images {args.images}: not a folder")
            paths = sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not paths:
                raise HeadlessUsageError(f"--images {args.images}: no {', '.join(IMAGE_SUFFIXES)} files")
            sources = [(validate_user_id(path.stem), path) for path in paths]
        else:
            if not args.user_id:
                raise HeadlessUsageError("--user-id is required (it names the persona's output folder)")
            if args.image is None and not args.concept.strip():
                raise HeadlessUsageError("give --image, --images or --concept")
            sources = [(validate_user_id(args.user_id), args.image)]
        return [PersonaJob(user_id=user_id, concept=args.concept, language=args.language, seed=args.seed,
                           regenerate=args.regenerate, image=open_image(path) if path is not None else None)
                for user_id, path in sources]
    except (UnsafePathError, PersonaImageError) as exc:
        raise HeadlessUsageError(str(exc)) from None


def run_persona_generate(args: argparse.Namespace) -> int:
    from ..tools.persona_generator import STAGES, PersonaGenerationError, generate_persona
    from ..utils.llm import LLMError
    from ..utils.output_paths import output_root

    jobs = _persona_jobs(args)
    root = (args.output.expanduser().resolve() if args.output else output_root())
    pool = _pool(args)
    bar = _bar(len(jobs) * len(STAGES), "stage", args.json)

    async def one(job):
        try:
            return await generate_persona(pool, args.llm_profile, job, root,
                                          on_stage=lambda stage, status: bar.update(1))
        except (PersonaGenerationError, LLMError) as exc:
            return exc

    async def every():
        return await asyncio.gather(*(one(job) for job in jobs))  # each one's stages in their own order

    try:
        results = asyncio.run(every())
    finally:
        bar.close()
    lines, value, failed = [], [], 0
    for job, result in zip(jobs, results):
        if isinstance(result, Exception):
            failed += 1
            lines.append(f"{job.user_id}: FAILED: {result}")
            value.append({"user_id": job.user_id, "error": str(result)})
            continue
        lines.append(f"{job.user_id}: {result.card['data']['name']} -> {result.json_path} and {result.png_path}")
        lines += [f"  note: {note}" for note in result.notes]
        value.append({"user_id": job.user_id, "name": result.card["data"]["name"], "json": str(result.json_path),
                      "png": str(result.png_path), "notes": result.notes, "resumed": result.resumed})
    _emit(args, value, lines)
    return EXIT_FAILED if failed else EXIT_OK


# -- posts ----------------------------------------------------------------------

def _personas(patterns: list[str]) -> list[Persona]:
    from .personas import PersonaFileError, read_personas

    try:
        entries = read_personas(patterns)
    except PersonaFileError as exc:
        raise HeadlessUsageError(str(exc)) from None
    return [Persona(user_id=entry.user_id, card=card_from_json_text(entry.persona_json, entry.path.name))
            for entry in entries]


def run_posts(args: argparse.Namespace) -> int:
    from ..tools.persona_posts import posts_for_personas
    from ..utils.settings import ContextSettings

    personas = _personas(args.personas)
    offsets = [args.start_day_offset + i for i in range(args.days)]
    pool = _pool(args)
    root = args.output.expanduser().resolve()
    weather_url = ContextSettings.load().weather_url if args.weather else ""
    bar = _bar(len(personas) * len(offsets), "day", args.json)
    counts = {"written": 0, "skipped": 0, "failed": 0}

    def on_day(user_id: str, day: str, ok: bool | None) -> None:
        counts["skipped" if ok is None else "written" if ok else "failed"] += 1
        bar.set_postfix(counts, refresh=False)
        bar.update(1)

    try:
        reports = asyncio.run(posts_for_personas(pool, args.llm_profile, personas, offsets, root,
                                                 seed=args.seed, weather_url=weather_url, on_day=on_day))
    finally:
        bar.close()
    failed = [r for r in reports if not r.ok]
    lines = [report.summary() for report in reports]
    lines.append(f"{len(reports)} personas: {sum(len(r.written) for r in reports)} days written, "
                 f"{sum(len(r.skipped) for r in reports)} already there, "
                 f"{sum(len(r.failed) for r in reports)} failed; {pool.calls} LLM calls, "
                 f"at most {pool.peak_in_flight} at once (bound {pool.max_concurrent}); output {root}")
    _emit(args, [{"user_id": r.user_id, "name": r.name, "written": r.written, "skipped": r.skipped,
                  "failed": r.failed} for r in reports], lines)
    return EXIT_FAILED if failed else EXIT_OK


COMMANDS = {"persona": run_persona_generate, "posts": run_posts}
