"""Settings of the scale-out mode, and no Redis password in any message."""

from __future__ import annotations

import pytest

from comfyui_twitterchat.service.config import load_service_settings, parse_service_settings
from comfyui_twitterchat.service.redis_store import RedisStore, StoreUnavailable
from comfyui_twitterchat.utils.settings import ConfigError
from comfyui_twitterchat.utils.structured_logger import redact_text


def test_the_default_backend_is_sqlite_and_redis_is_chosen_by_the_environment():
    assert parse_service_settings({}, {}).backend == "sqlite"
    settings = parse_service_settings({}, {"TWITTERCHAT_SERVICE_BACKEND": "Redis",
                                           "TWITTERCHAT_REDIS_URL": "redis://10.0.0.5:6380/2",
                                           "TWITTERCHAT_REDIS_PASSWORD": "s3cret-pass",
                                           "TWITTERCHAT_SERVICE_LEASE_SECONDS": "30"})
    assert (settings.backend, settings.redis_url, settings.lease_seconds) == ("redis", "redis://10.0.0.5:6380/2", 30.0)
    assert settings.redis_password == "s3cret-pass" and "s3cret-pass" not in repr(settings)


@pytest.mark.parametrize("config, env, message", [
    ({"service": {"backend": "postgres"}}, {}, "must be one of sqlite, redis"),
    ({"service": {"redis_url": "redis://:pw@host:6379/0"}}, {}, "TWITTERCHAT_REDIS_PASSWORD"),
    ({"service": {"redis_password": "pw"}}, {}, "secrets do not belong in config.json"),
    ({}, {"TWITTERCHAT_REDIS_URL": "http://host:6379"}, "expected redis://host:port/db"),
    ({}, {"TWITTERCHAT_SERVICE_LEASE_SECONDS": "0"}, "TWITTERCHAT_SERVICE_LEASE_SECONDS"),
    ({}, {"TWITTERCHAT_PUBLIC_URL": "gpu0:8188"}, "expected http(s)://host:port"),
])
def test_bad_scale_out_settings_name_the_problem_and_switch_off_only_the_service(config, env, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_service_settings(config, env)
    assert load_service_settings(config, env).enabled is False


def test_an_unreachable_redis_is_named_without_its_password():
    from comfyui_harness import free_port

    store = RedisStore(f"redis://:hunter2-secret@127.0.0.1:{free_port()}/3", prefix="x")
    with pytest.raises(StoreUnavailable) as caught:
        store.open()
    assert caught.value.public.startswith("Redis at redis://127.0.0.1:") and "/3 is unreachable" in caught.value.public
    assert "hunter2" not in caught.value.public and "hunter2" not in str(caught.value)
    assert "hunter2" not in redact_text("connect redis://:hunter2-secret@127.0.0.1:6379/0 failed")


def test_a_password_in_the_environments_redis_url_stays_out_of_the_settings_repr():
    settings = parse_service_settings({}, {"TWITTERCHAT_REDIS_URL": "redis://:hunter2-secret@10.0.0.5:6379/0"})
    assert settings.redis_url.endswith("@10.0.0.5:6379/0") and "hunter2" not in repr(settings)
