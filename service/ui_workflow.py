"""Turn a workflow saved by ComfyUI's frontend (top-level ``nodes`` and
``links``) into the API format ``/prompt`` takes, or refuse it as a whole.

The UI format keeps widget values as a bare list in the order the frontend
created the widgets, so only the node class's own ``INPUT_TYPES()`` can name
them: the caller passes ``input_types(class_type)``, which returns what that
class's ``INPUT_TYPES()`` returns, or None for a class this server does not
have. Whatever the frontend decides at queue time and this module cannot
reproduce exactly (bypassed nodes, subgraphs, group nodes, unknown classes,
widget values that do not line up with the definition) is refused with one
message that lists every problem: a half-converted workflow would run
something other than what the user sees.

Plain Python with no relative import, so the module also loads on its own.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable

EXPORT_HINT = ('Open it in ComfyUI and use "Export (API)" (Workflow menu) or "Save (API Format)" '
               '(legacy menu), then send that file instead.')

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
SEED_NAMES = frozenset({"seed", "noise_seed"})
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize", "increment-wrap")
MODE_MUTED = 2
MODE_BYPASS = 4
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"
# Frontend-only nodes that carry no data: dropped when the server has no class of that name.
ANNOTATIONS = frozenset({"Note", "MarkdownNote", "Label (rgthree)", "Bookmark (rgthree)"})
SUBGRAPH_TYPE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE)
GROUP_NODE_PREFIXES = ("workflow>", "workflow/")

InputTypes = Callable[[str], "dict | None"]


class UIWorkflowError(ValueError):
    """A UI-format workflow that cannot be converted; the message says why and what to do."""


class _Problem(Exception):
    """One thing wrong with one node; collected, then raised together as a UIWorkflowError."""


@dataclass(frozen=True)
class _Link:
    origin_id: str
    origin_slot: int


@dataclass(frozen=True)
class _Widget:
    name: str
    extras: tuple[int, ...]  # how many values the frontend may store right after this one
    control: bool  # the first extra value is a control_after_generate mode
    optional: bool = False  # an optional input: a workflow saved before it existed has no value


@dataclass(frozen=True)
class _Node:
    id: str
    raw: dict
    class_type: str
    role: str  # "run", "muted", "dropped", "reroute", "primitive" or "refused"
    definition: dict | None

    @property
    def label(self) -> str:
        return f"node {self.id} ({self.class_type})"


def is_ui_workflow(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("nodes"), list) and isinstance(value.get("links"), list)


def ui_to_api(workflow: dict, input_types: InputTypes) -> dict:
    """Return ``{node_id: {"class_type", "inputs", "_meta": {"title"}}}`` for a UI-format workflow."""
    if not is_ui_workflow(workflow):
        raise UIWorkflowError('This is not a ComfyUI UI-format workflow (an object with "nodes" and "links" '
                              f"lists). {EXPORT_HINT}")
    problems = _graph_problems(workflow)
    if problems:
        raise UIWorkflowError(_refusal(problems))
    try:
        links = _parse_links(workflow["links"])
        nodes = _parse_nodes(workflow["nodes"], input_types, problems)
    except _Problem as exc:
        raise UIWorkflowError(_refusal([str(exc)])) from None
    api = {}
    for node in nodes.values():
        if node.role != "run":
            continue
        try:
            api[node.id] = {"class_type": node.class_type,
                            "inputs": _node_inputs(node, nodes, links),
                            "_meta": {"title": node.raw.get("title") or node.class_type}}
        except _Problem as exc:
            problems.append(f"{node.label}: {exc}")
    if problems:
        raise UIWorkflowError(_refusal(problems))
    return api


def _refusal(problems: list[str]) -> str:
    lines = "\n".join(f"- {problem}" for problem in problems)
    return f"Cannot convert this UI-format workflow to the API format:\n{lines}\n{EXPORT_HINT}"


def _graph_problems(workflow: dict) -> list[str]:
    problems = []
    definitions = workflow.get("definitions")
    if isinstance(definitions, dict) and definitions.get("subgraphs"):
        problems.append("it contains subgraphs, which only the frontend can flatten")
    extra = workflow.get("extra")
    if isinstance(extra, dict) and extra.get("groupNodes"):
        problems.append("it contains group nodes, which only the frontend can expand")
    return problems


def _parse_links(rows: list) -> dict[str, _Link]:
    """Link id -> origin, from ``[id, origin_id, origin_slot, target_id, target_slot, type]``
    rows or the ``{"id", "origin_id", "origin_slot", ...}`` objects newer frontends write."""
    links = {}
    for row in rows:
        if row is None:
            continue
        if isinstance(row, dict):
            link_id, origin_id, origin_slot = row.get("id"), row.get("origin_id"), row.get("origin_slot")
        elif isinstance(row, list) and len(row) >= 5:
            link_id, origin_id, origin_slot = row[:3]
        else:
            raise _Problem(f"link {row!r} is neither a [id, origin, slot, target, slot, type] row nor a link object")
        if link_id is None or origin_id is None or not _is_int(origin_slot):
            raise _Problem(f"link {row!r} has no id, origin node or origin slot")
        links[str(link_id)] = _Link(str(origin_id), origin_slot)
    return links


def _parse_nodes(entries: list, input_types: InputTypes, problems: list[str]) -> dict[str, _Node]:
    nodes = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("id") is None:
            raise _Problem(f"node entry {entry!r} is not an object with an id")
        node_id = str(entry["id"])
        if node_id in nodes:
            raise _Problem(f"node id {node_id} is used twice")
        class_type = entry.get("type")
        if not isinstance(class_type, str) or not class_type:
            raise _Problem(f"node {node_id} has no type")
        try:
            role, definition = _role(entry, class_type, input_types)
        except _Problem as exc:
            role, definition = "refused", None
            problems.append(f"node {node_id} ({class_type}): {exc}")
        nodes[node_id] = _Node(node_id, entry, class_type, role, definition)
    return nodes


def _role(entry: dict, class_type: str, input_types: InputTypes) -> tuple[str, dict | None]:
    """What the frontend does with this node when it queues the workflow."""
    if entry.get("mode") == MODE_MUTED:
        return "muted", None
    definition = input_types(class_type)
    if definition is None and class_type in ANNOTATIONS:
        return "dropped", None
    if SUBGRAPH_TYPE.fullmatch(class_type):
        raise _Problem("a subgraph, which only the frontend can flatten")
    if class_type.startswith(GROUP_NODE_PREFIXES):
        raise _Problem("a group node, which only the frontend can expand")
    if entry.get("mode") == MODE_BYPASS:
        raise _Problem("bypassed: the frontend passes its inputs through to matching outputs by type, "
                       "which this converter does not do; un-bypass or delete it")
    if definition is not None:
        return "run", definition
    if class_type == REROUTE:
        return "reroute", None
    if class_type == PRIMITIVE:
        return "primitive", None
    raise _Problem("this ComfyUI has no node class of that type (is a custom node pack missing?)")


def _node_inputs(node: _Node, nodes: dict[str, _Node], links: dict[str, _Link]) -> dict:
    widgets = _widget_inputs(node.definition)
    connected = _connected_inputs(node.raw)
    values = _widget_values(node.raw, widgets, connected)
    missing = {}
    inputs = {}
    for name in _declared_inputs(node.definition):
        if name in connected:
            kind, found = _resolve(connected[name], name in widgets, nodes, links)
            if kind == "missing":
                missing[name] = found
            else:
                inputs[name] = found if kind == "link" else _api_value(found)
        elif name in values:
            inputs[name] = _api_value(values[name])
    for name, link_id in connected.items():
        if name not in inputs and name not in missing:  # an input the definition does not declare
            kind, found = _resolve(link_id, False, nodes, links)
            if kind == "link":
                inputs[name] = found
    required = (node.definition.get("required") or {}).keys()
    absent = [name for name in required if name not in inputs]
    if absent:
        raise _Problem("; ".join(f"required input {name!r} " + missing.get(name, "is not connected")
                                 for name in absent))
    return inputs


def _declared_inputs(definition: dict) -> list[str]:
    return [*(definition.get("required") or {}), *(definition.get("optional") or {})]


def _connected_inputs(raw: dict) -> dict[str, Any]:
    """Input name -> link id, for the node's inputs that have a link."""
    connected = {}
    for entry in raw.get("inputs") or []:
        if not isinstance(entry, dict):
            raise _Problem(f"input entry {entry!r} is not an object")
        if entry.get("link") is None:
            continue
        widget = entry.get("widget")
        name = widget.get("name") if isinstance(widget, dict) and widget.get("name") else entry.get("name")
        if not isinstance(name, str):
            raise _Problem(f"input entry {entry!r} has no name")
        connected[name] = entry["link"]
    return connected


def _spec(spec: Any) -> tuple[Any, dict]:
    """(type, options) of one INPUT_TYPES entry; a list or tuple type is a combo."""
    if isinstance(spec, (list, tuple)) and spec:
        kind, options = spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    else:
        kind, options = spec, {}
    if isinstance(kind, Enum):  # ComfyUI's IO.INT and friends
        kind = kind.value
    return kind, options


def _widget_inputs(definition: dict) -> dict[str, _Widget]:
    """The inputs the frontend draws as widgets, in the order it stores their values."""
    widgets = {}
    for section in ("required", "optional"):
        for name, spec in (definition.get(section) or {}).items():
            kind, options = _spec(spec)
            combo = isinstance(kind, (list, tuple)) or kind == "COMBO"
            if options.get("forceInput") or not (combo or kind in WIDGET_TYPES):
                continue
            control = bool(options.get("control_after_generate")) or (kind == "INT" and name in SEED_NAMES)
            if control:
                # A combo's control may be followed by its "control_filter_list" text.
                extras = (1, 2) if combo else (1,)
            elif options.get("image_upload"):
                extras = (0, 1)  # some frontends store the upload button's value
            else:
                extras = (0,)
            widgets[name] = _Widget(name, extras, control, section == "optional")
    return widgets


def _widget_values(raw: dict, widgets: dict[str, _Widget], connected: dict[str, Any]) -> dict[str, Any]:
    saved = raw.get("widgets_values")
    if saved is None:
        saved = []
    if isinstance(saved, dict):
        absent = [name for name in widgets if name not in saved and name not in connected]
        if absent:
            raise _Problem(f"widgets_values has no value for {', '.join(absent)}")
        return {name: saved[name] for name in widgets if name in saved}
    if not isinstance(saved, list):
        raise _Problem("widgets_values is neither a list nor an object")
    slots = list(widgets.values())
    # A workflow saved before a node gained optional widgets lacks their values at the end (the
    # frontend fills in their defaults when it loads one): leave those inputs out, as ComfyUI allows.
    newer = 0
    while newer < len(slots) and slots[len(slots) - 1 - newer].optional:
        newer += 1
    problem = None
    for drop in range(newer + 1):
        try:
            extras = _layout(slots[:len(slots) - drop], saved)
        except _Problem as exc:
            problem = problem or exc
            continue
        slots = slots[:len(slots) - drop]
        break
    else:
        raise problem
    values = {}
    position = 0
    for slot, extra in zip(slots, extras):
        values[slot.name] = saved[position]
        position += 1 + extra
    return values


def _layout(slots: list[_Widget], saved: list) -> tuple[int, ...]:
    """How many extra values follow each widget's value; refuse when the count or
    the control values do not fit the definition, or fit it in more than one way."""
    by_count = [extras for extras in itertools.product(*(slot.extras for slot in slots))
                if len(slots) + sum(extras) == len(saved)]
    if not by_count:
        totals = sorted({len(slots) + sum(extras) for extras in itertools.product(*(s.extras for s in slots))})
        expected = " or ".join(str(total) for total in totals)
        names = ", ".join(f"{s.name} (+ control value)" if s.control else s.name for s in slots) or "none"
        raise _Problem(f"expected {expected} widget values for its widgets ({names}), got {len(saved)}; "
                       "the node's definition may have changed since the workflow was saved")
    fits = [extras for extras in by_count if _controls_fit(slots, extras, saved)]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise _Problem(f"widget values {saved!r} do not line up with its widgets: no control value "
                       f"({', '.join(CONTROL_VALUES)}) where the definition puts one")
    raise _Problem(f"widget values {saved!r} fit its widgets in more than one way")


def _controls_fit(slots: list[_Widget], extras: tuple[int, ...], saved: list) -> bool:
    position = 0
    for slot, extra in zip(slots, extras):
        if slot.control and saved[position + 1] not in CONTROL_VALUES:
            return False
        position += 1 + extra
    return True


def _resolve(link_id: Any, to_widget: bool, nodes: dict[str, _Node],
             links: dict[str, _Link]) -> tuple[str, Any]:
    """Where a connected input gets its data: ("link", [origin_id, slot]), ("value", v)
    from a PrimitiveNode, or ("missing", why) when the frontend would drop the input."""
    seen = set()
    while True:
        link = links.get(str(link_id))
        if link is None:
            raise _Problem(f"link {link_id} is not in the workflow's links (is the file damaged?)")
        origin = nodes.get(link.origin_id)
        if origin is None:
            raise _Problem(f"link {link_id} comes from node {link.origin_id}, which is not in the workflow")
        if origin.role in ("run", "refused"):
            return "link", [origin.id, link.origin_slot]
        if origin.role == "muted":
            return "missing", f"comes from {origin.label}, which is muted"
        if origin.role == "dropped":
            return "missing", f"comes from {origin.label}, which only the frontend has"
        if origin.role == "primitive":
            return "value", _primitive_value(origin, to_widget)
        # A Reroute: follow its one input back to the real origin.
        if origin.id in seen:
            raise _Problem(f"Reroute {origin.label} is part of a loop")
        seen.add(origin.id)
        reroute_inputs = origin.raw.get("inputs") or [{}]
        link_id = reroute_inputs[0].get("link") if isinstance(reroute_inputs[0], dict) else None
        if link_id is None:
            return "missing", f"comes from {origin.label}, which has nothing connected to it"


def _primitive_value(origin: _Node, to_widget: bool) -> Any:
    if not to_widget:
        raise _Problem(f"{origin.label} feeds an input that is not a widget")
    saved = origin.raw.get("widgets_values")
    if not isinstance(saved, list) or not saved:
        raise _Problem(f"{origin.label} has no saved value")
    return saved[0]  # any further value is its control_after_generate mode


def _api_value(value: Any) -> Any:
    """A widget value as the API format carries it. A list would read as a link, so
    the frontend wraps it as {"__value__": [...]} and the server unwraps it."""
    value = copy.deepcopy(value)
    return {"__value__": value} if isinstance(value, list) else value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
