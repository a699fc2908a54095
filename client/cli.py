"""``twitterchat``: submit, follow and cancel tasks from a shell; and, with no server,
generate persona cards (``persona generate``) and posts for many personas (``posts``)
in this process (``headless.py``).

Exit status: 0 when every task waited for completed (or the command did what
it was asked), 1 when one failed, was cancelled or did not finish in
``--timeout``, 2 for usage and connection errors (the message names the URL,
never the token), 130 when interrupted (the tasks keep running).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import DEFAULT_URL, TOKEN_ENV, URL_ENV, display_url
from .errors import TwitterChatError
from .follow import BatchProgress
from .formatting import describe_batch, describe_task, summarize_tasks
from .headless import COMMANDS as HEADLESS_COMMANDS, HeadlessUsageError, add_commands as add_headless_commands
from .personas import PersonaFileError, read_personas
from .sync_client import TwitterChatClient

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TEMPLATE = "persona_posts"

log = logging.getLogger("twitterchat.client")


class UsageError(Exception):
    """Bad input found after parsing (a file, a JSON option): exit status 2."""


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, like '{\"campaign\": \"spring\"}'")
    return value


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= days <= 31:
        raise argparse.ArgumentTypeError("must be between 1 and 31")
    return days


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if seconds <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    # The global options work before and after the subcommand: subcommands get
    # them too, with SUPPRESS so they do not overwrite a value given before.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--url", help=f"service URL (default ${URL_ENV}, else {DEFAULT_URL})")
    common.add_argument("--token", help=f"API token (default ${TOKEN_ENV}; prefer the variable: "
                                        "arguments show in the process list)")
    common.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    common.add_argument("-v", "--verbose", action="store_true", help="log reconnections and retries")

    parser = argparse.ArgumentParser(prog="twitterchat", parents=[common],
                                     description="Queue and follow TwitterChat tasks on a ComfyUI server.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[common], help=help_text, description=help_text)

    submit = command("submit", "queue one API-format workflow")
    submit.add_argument("workflow", metavar="WORKFLOW_API.json", type=Path)
    submit.add_argument("--priority", type=int, help="higher runs first")
    submit.add_argument("--metadata", type=_json_object, help="a small JSON object kept with the task")
    submit.add_argument("--wait", action="store_true", help="wait until the task is final")
    submit.add_argument("--timeout", type=_seconds, help="with --wait: give up after this many seconds")

    batch = command("batch", f"queue the {TEMPLATE} template for every persona card")
    batch.add_argument("--personas", required=True, nargs="+", action="extend", metavar="GLOB",
                       help="card files (.json or .png); globs are expanded here, quote them")
    batch.add_argument("--days", required=True, type=_days, help="posts for this many days (1-31)")
    batch.add_argument("--start-offset", type=int, help="first day, counted from today (default 0)")
    batch.add_argument("--llm-profile", help="LLM profile name on the server")
    batch.add_argument("--name", help="batch name (default personas-<UTC time>)")
    batch.add_argument("--priority", type=int, help="higher runs first")
    batch.add_argument("--metadata", type=_json_object, help="a small JSON object kept with the batch")
    batch.add_argument("--watch", action="store_true", help="follow the batch until it is finished")
    batch.add_argument("--timeout", type=_seconds, help="with --watch: give up after this many seconds")

    status = command("status", "show a task, or a batch")
    status.add_argument("id", metavar="ID")

    cancel = command("cancel", "cancel a task, or every task of a batch")
    cancel.add_argument("id", metavar="ID")

    watch = command("watch", "follow a batch with a progress bar until it is finished")
    watch.add_argument("batch_id", metavar="BATCH_ID")
    watch.add_argument("--timeout", type=_seconds, help="give up after this many seconds")

    add_headless_commands(command, common, _days)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    for name, default in (("url", None), ("token", None), ("json", False), ("verbose", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    return args


def _emit(args: argparse.Namespace, value: Any, lines: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(value, indent=2, ensure_ascii=False))
    else:
        for line in lines:
            print(line)


def _final_status(tasks: Sequence[dict[str, Any]]) -> int:
    return EXIT_OK if all(task.get("status") == "completed" for task in tasks) else EXIT_FAILED


def _read_workflow(path: Path) -> dict[str, Any]:
    try:
        workflow = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not JSON: {exc}") from None
    # A UI-format file (nodes/links) is sent as it is: the server converts it with its own
    # node definitions, or refuses it saying to export the API format.
    if not isinstance(workflow, dict) or not workflow:
        raise UsageError(f"{path} must hold an API-format workflow: an object of nodes by id")
    return workflow


def _task_bar(args: argparse.Namespace, task_id: str) -> tuple[Callable[[dict[str, Any]], None] | None,
                                                                Callable[[], None]]:
    """A progress bar (on stderr) for one task, updated by ``wait``'s ``on_update``."""
    if args.json:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", desc=f"task {task_id[:8]}", file=sys.stderr, disable=None,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}{postfix}")

    def update(task: dict[str, Any]) -> None:
        progress = task.get("progress")
        bar.n = round(100 * progress) if isinstance(progress, (int, float)) else bar.n
        node = task.get("current_node")
        where = f" {node.get('type')}" if isinstance(node, dict) else ""
        bar.set_postfix_str(f"{task.get('status')}{where}")

    return update, bar.close


def _batch_bar(args: argparse.Namespace, batch_id: str) -> tuple[Callable[[BatchProgress], None] | None,
                                                                  Callable[[], None]]:
    """A progress bar (on stderr) for a batch: tasks final out of the total, counts alongside.
    It appears with the first report, once the total is known."""
    if args.json:
        return None, lambda: None
    from tqdm import tqdm

    bars: list[tqdm] = []

    def update(progress: BatchProgress) -> None:
        if not bars:
            bars.append(tqdm(total=progress.total, unit="task", desc=f"batch {batch_id[:8]}",
                             file=sys.stderr, disable=None))
        bar = bars[0]
        bar.total = progress.total
        bar.n = progress.finished
        counts = progress.counts
        bar.set_postfix_str(", ".join(f"{counts.get(status, 0)} {status}"
                                      for status in ("completed", "failed", "cancelled", "running")))

    def close() -> None:
        for bar in bars:
            bar.close()

    return update, close


def _wait_task(client: TwitterChatClient, args: argparse.Namespace, task_id: str) -> int:
    on_update, close = _task_bar(args, task_id)
    try:
        task = client.wait(task_id, timeout=args.timeout, on_update=on_update)
    finally:
        close()
    _emit(args, task, describe_task(task))
    return _final_status([task])


def _watch_batch(client: TwitterChatClient, args: argparse.Namespace, batch_id: str) -> int:
    on_progress, close = _batch_bar(args, batch_id)
    try:
        tasks = client.wait_for_batch(batch_id, timeout=args.timeout, on_progress=on_progress)
    finally:
        close()
    lines = summarize_tasks(tasks)
    lines[0] = f"batch {batch_id}: {lines[0]}"
    _emit(args, tasks, lines)
    return _final_status(tasks)


def run_submit(client: TwitterChatClient, args: argparse.Namespace) -> int:
    workflow = _read_workflow(args.workflow)
    answer = client.submit_task(workflow, priority=args.priority, metadata=args.metadata)
    if not args.wait:
        _emit(args, answer, [f"task {answer['task_id']}: {answer.get('status', 'queued')}"])
        return EXIT_OK
    if not args.json:
        print(f"task {answer['task_id']}: {answer.get('status', 'queued')}")
    return _wait_task(client, args, answer["task_id"])


def batch_request(args: argparse.Namespace) -> dict[str, Any]:
    """The ``submit_batch`` arguments for ``twitterchat batch`` (cards read here)."""
    try:
        personas = read_personas(args.personas)
    except PersonaFileError as exc:
        raise UsageError(str(exc)) from None
    params: dict[str, Any] = {"num_days": args.days}
    if args.start_offset is not None:
        params["start_day_offset"] = args.start_offset
    if args.llm_profile:
        params["llm_profile"] = args.llm_profile
    name = args.name or f"personas-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    return {"name": name, "template": TEMPLATE, "personas": [p.as_batch_entry() for p in personas],
            "params": params, "priority": args.priority, "metadata": args.metadata}


def run_batch(client: TwitterChatClient, args: argparse.Namespace) -> int:
    request = batch_request(args)
    answer = client.submit_batch(request.pop("name"), **request)
    users = [entry["user_id"] for entry in request["personas"]]
    users_text = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    headline = f"batch {answer['batch_id']}: {len(answer.get('task_ids', []))} tasks queued ({users_text})"
    if not args.watch:
        _emit(args, answer, [headline])
        return EXIT_OK
    if not args.json:
        print(headline)
    return _watch_batch(client, args, answer["batch_id"])


def _task_or_batch(client: TwitterChatClient, item_id: str, for_task: Callable[[str], Any],
                   for_batch: Callable[[str], Any]) -> tuple[str, Any]:
    """``("task", for_task(id))``, or when no task has that id ``("batch", for_batch(id))``."""
    try:
        return "task", for_task(item_id)
    except TwitterChatError as exc:
        if exc.status != 404:
            raise
    try:
        return "batch", for_batch(item_id)
    except TwitterChatError as exc:
        if exc.status != 404:
            raise
        raise UsageError(f"no task or batch {item_id!r} at {display_url(client.base_url)}") from None


def run_status(client: TwitterChatClient, args: argparse.Namespace) -> int:
    kind, found = _task_or_batch(client, args.id, client.get_task, client.get_batch)
    _emit(args, found, describe_task(found) if kind == "task" else describe_batch(found))
    return EXIT_OK


def run_cancel(client: TwitterChatClient, args: argparse.Namespace) -> int:
    kind, answer = _task_or_batch(client, args.id, client.cancel, client.cancel_batch)
    if kind == "batch":
        _emit(args, answer, [f"batch {args.id}: {answer.get('cancelled')} tasks cancelled"])
        return EXIT_OK
    done = "cancelled" if answer.get("cancelled") else "not cancelled"
    _emit(args, answer, [f"task {args.id}: {done}, now {answer.get('status')}"
                         + (f" ({answer['message']})" if answer.get("message") else "")])
    return EXIT_OK


def run_watch(client: TwitterChatClient, args: argparse.Namespace) -> int:
    return _watch_batch(client, args, args.batch_id)


COMMANDS: dict[str, Callable[[TwitterChatClient, argparse.Namespace], int]] = {
    "submit": run_submit, "batch": run_batch, "status": run_status, "cancel": run_cancel,
    "watch": run_watch,
}


def _fail(message: str, code: int) -> int:
    print(f"twitterchat: error: {message}", file=sys.stderr)
    return code


def _configure_logging(verbose: bool) -> None:
    """Client logs on stderr: warnings only, everything with --verbose."""
    logger = logging.getLogger("twitterchat.client")
    logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
    if not logging.getLogger("twitterchat").handlers:  # the pack's own console handler is not set up
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("twitterchat: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _configure_logging(args.verbose)
    if args.command in HEADLESS_COMMANDS:  # run here: no server, no client
        try:
            return HEADLESS_COMMANDS[args.command](args)
        except (HeadlessUsageError, ValueError) as exc:
            return _fail(str(exc), EXIT_USAGE)
        except KeyboardInterrupt:
            print("\ninterrupted; run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
    try:
        with TwitterChatClient(args.url, token=args.token) as client:
            return COMMANDS[args.command](client, args)
    except (UsageError, ValueError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except TwitterChatError as exc:
        message = str(exc)
        if exc.node_errors:
            message += "\nnode errors: " + json.dumps(exc.node_errors, indent=2, ensure_ascii=False)
        return _fail(message, EXIT_USAGE)
    except TimeoutError as exc:
        return _fail(f"{exc}; the tasks keep running on the server", EXIT_FAILED)
    except KeyboardInterrupt:
        print("\ninterrupted; the tasks keep running on the server", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
