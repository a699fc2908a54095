"""Input declarations shared by several nodes (one definition, the same widget everywhere)."""

PERSONA = ("TC_PERSONA",)
CALENDAR = ("TC_CALENDAR",)
DAY_OFFSET = ("INT", {"default": 0, "min": -366, "max": 366, "tooltip": "Days after today, in the persona's zone"})
LLM_PROFILE = ("STRING", {"default": "auto", "tooltip": "A profile name from config.json (auto, openai, "
                                                        "local, ...); never a key"})
SEED = ("INT", {"default": 0, "min": 0, "max": 2**31 - 1})
INCLUDE_WEATHER = ("BOOLEAN", {"default": True})
