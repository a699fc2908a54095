"""Input declarations shared by several nodes (one definition, the same widget everywhere)."""

from ..utils.profile_names import check_profile, profile_names

PERSONA = ("TC_PERSONA", {"tooltip": "The persona from a Persona Loader"})
CALENDAR = ("TC_CALENDAR", {"tooltip": "The monthly plans from a Calendar Manager"})
CONTEXT = ("TC_CONTEXT", {"tooltip": "The persona's local day from a Context Gatherer"})
DAY_OFFSET = ("INT", {"default": 0, "min": -366, "max": 366, "tooltip": "Days after today, in the persona's zone"})
SEED = ("INT", {"default": 0, "min": 0, "max": 2**31 - 1,
                "tooltip": "Sampling seed for the model (exact on the embedded model, best effort on an "
                           "endpoint). Same seed and inputs: ComfyUI reuses the last result and writes "
                           "nothing new; a new seed writes new posts (saved in a new <date>_2 folder)."})
INCLUDE_WEATHER = ("BOOLEAN", {"default": True,
                               "tooltip": "Ask the weather provider for the day's forecast (offline: no weather)"})
REGENERATE = ("BOOLEAN", {"default": False,
                          "tooltip": "Plan the month again on every queue, replacing the cached plan"})


def llm_profile():
    """A list of the configured profile names (read when ComfyUI asks for the node's inputs)."""
    return (profile_names(), {"default": "auto",
                              "tooltip": "An LLM profile from config.json (auto: an OpenAI-compatible "
                                         "endpoint when OPENAI_BASE_URL/OPENAI_API_KEY is set, else the "
                                         "embedded model). Keys never go in a widget."})


def validate_llm_profile(llm_profile=None):
    """For a node's ``VALIDATE_INPUTS``: a saved workflow's free-text value that is not a profile
    fails validation with a message that never repeats it. ``None``: the input is linked."""
    return True if llm_profile is None else check_profile(llm_profile)


def require_llm_profile(node: str, llm_profile) -> None:
    """At run time too: a value that reached the node through a link skipped validation. The
    error never repeats the value."""
    problem = check_profile(llm_profile)
    if problem is not True:
        raise ValueError(f"{node}: llm_profile is {problem}")
