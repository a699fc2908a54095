"""The main job, end to end: a real ComfyUI with this pack, examples/api/workflow_api.json
queued over HTTP, the monitor's events received over the websocket, and the files
written per user and date shown at the end.

Uses the embedded model unless OPENAI_BASE_URL / OPENAI_API_KEY are set.
Run it with ``bash examples/run_demo.sh`` (which sets everything up first); options
pick another card and days: ``bash examples/run_demo.sh --persona-file
chengdu_baker_xiaoyu.json --user-id xiaoyu_001 --day-offset 5``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "harness"))  # the demo reuses the test harness

from collectors import WebsocketCollector  # noqa: E402
from comfyui_harness import ComfyUIServer, cache_root, provision  # noqa: E402

EVENT = "twitterchat.monitor"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the example workflow on a real ComfyUI with this pack.")
    parser.add_argument("--persona-file", help="a card in examples/personas/ (default: the workflow's)")
    parser.add_argument("--user-id", help="the persona's account id (default: the workflow's)")
    parser.add_argument("--day-offset", type=int, default=0, help="the first day, in days after today")
    args = parser.parse_args(argv)
    work = Path(os.environ.get("TWITTERCHAT_DEMO_DIR", cache_root() / "demo"))
    work.mkdir(parents=True, exist_ok=True)
    workflow = json.loads((ROOT / "examples" / "api" / "workflow_api.json").read_text())
    for node in workflow.values():  # the same values reach every node that takes them
        inputs = node["inputs"]
        if args.persona_file and "persona_file" in inputs:
            inputs["persona_file"] = args.persona_file
        if args.user_id and "user_id" in inputs:
            inputs["user_id"] = args.user_id
        for key in ("day_offset", "start_day_offset"):
            if key in inputs and not isinstance(inputs[key], list):
                inputs[key] = args.day_offset
    backend = "OpenAI-compatible endpoint" if os.environ.get("OPENAI_BASE_URL") or os.environ.get(
        "OPENAI_API_KEY") else "embedded Gemma 3 270M"
    print(f"demo: starting ComfyUI with the pack ({backend}); files go to {work / 'output'}", flush=True)
    server = ComfyUIServer(provision(), work, {"comfyui-twitterchat": ROOT},
                           extra_args=("--disable-api-nodes",)).start()
    try:
        events = WebsocketCollector(server.url, EVENT)
        started = time.monotonic()
        prompt_id = server.queue_prompt(workflow)
        print(f"demo: queued {prompt_id}", flush=True)
        entry = server.wait_for_history(prompt_id, timeout=1800)
        time.sleep(1.5)  # one more monitor tick for the final event
        events.stop()
        print(f"demo: finished with status {entry['status']['status_str']} in "
              f"{time.monotonic() - started:.0f}s\n\nmonitor events received over the websocket:")
        for info in events.infos(prompt_id):
            node = info["current_node"]["type"] if info["current_node"] else "-"
            print(f"  {info['status']:<9} progress={info['progress']:<6} node={node:<20} "
                  f"error={(info['error_info'] or {}).get('message', '-')}")
        if entry["status"]["status_str"] != "success":
            error = [d for e, d in entry["status"]["messages"] if e == "execution_error"]
            print(f"\ndemo: the prompt failed: {error[0]['exception_message'] if error else 'see the log'}")
            print(server.log_text()[-3000:])
            return 1
        user = workflow["1"]["inputs"]["user_id"]
        folders = sorted(server.output_dir.joinpath(user).glob("20*"))
        mine = [f for f in folders if json.loads((f / "metadata.json").read_text())["workflow_id"] == prompt_id]
        print(f"\nfiles written for {user}:")
        for folder in mine:
            print(f"  {folder}")
            for name in sorted(p.name for p in folder.iterdir()):
                print(f"    {name}")
            print(f"    post: {(folder / 'tweet.txt').read_text().strip()}")
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
