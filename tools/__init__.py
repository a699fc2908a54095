"""Plain-Python logic behind the nodes: persona cards, dates, calendars, posts."""
