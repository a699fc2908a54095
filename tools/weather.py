"""Optional weather for the persona's city and day (Open-Meteo's forecast API,
no key). Any failure (offline, timeout, odd answer) returns None: the context
simply has no weather and the node still succeeds."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from datetime import date
from typing import Any

logger = logging.getLogger("twitterchat.weather")

# WMO weather interpretation codes, as Open-Meteo reports them.
WMO_CODES = {0: "clear sky", 1: "mainly clear", 2: "partly cloudy", 3: "overcast", 45: "fog",
             48: "rime fog", 51: "light drizzle", 53: "drizzle", 55: "dense drizzle", 61: "light rain",
             63: "rain", 65: "heavy rain", 71: "light snow", 73: "snow", 75: "heavy snow",
             80: "rain showers", 81: "rain showers", 82: "violent rain showers", 95: "thunderstorm",
             96: "thunderstorm with hail", 99: "thunderstorm with hail"}


def _get_json(url: str, timeout: float) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def fetch_weather(base_url: str, latitude: float, longitude: float, day: date, timezone_name: str,
                  timeout: float = 3.0, attempts: int = 2) -> dict[str, Any] | None:
    if not base_url:
        return None
    query = urllib.parse.urlencode({
        "latitude": f"{latitude:.4f}", "longitude": f"{longitude:.4f}", "timezone": timezone_name,
        "daily": "weathercode,temperature_2m_max,temperature_2m_min",
        "start_date": day.isoformat(), "end_date": day.isoformat()})
    url = f"{base_url}?{query}"
    from ..utils.retry import RetryContext  # tenacity, loaded only when weather is asked for

    try:
        data = RetryContext(max_attempts=attempts, initial_delay=0.2,
                            exceptions=(urllib.error.URLError, TimeoutError, ConnectionError)
                            ).execute(_get_json, url, timeout)
        daily = data["daily"]
        code = int(daily["weathercode"][0])
        return {"summary": WMO_CODES.get(code, f"weather code {code}"),
                "temp_max_c": float(daily["temperature_2m_max"][0]),
                "temp_min_c": float(daily["temperature_2m_min"][0])}
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
        logger.info("no weather for %s (%s); continuing without it", day, type(exc).__name__)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        logger.warning("weather provider answered in an unexpected shape (%s); continuing without it", exc)
    return None
