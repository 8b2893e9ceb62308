"""API keys: parsing the setting, hashing, authenticating, the startup rule, the FastAPI dependency."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from service.auth import ANONYMOUS_TENANT, ApiKeyRegistry, ConfigurationError, tenant_dependency

KEY_A = "a" * 8 + "-key-of-tenant-a"
KEY_A2 = "rotated-key-of-tenant-a"
KEY_B = "the-key-of-tenant-b-0123"


def test_inline_pairs_authenticate_to_their_tenant() -> None:
    registry = ApiKeyRegistry.from_setting(f"acme:{KEY_A}, acme:{KEY_A2},beta:{KEY_B}")
    assert registry.tenants == {"acme", "beta"}
    assert registry.authenticate(f"Bearer {KEY_A}") == "acme"
    assert registry.authenticate(f"bearer  {KEY_A2} ") == "acme"
    assert registry.authenticate(f"Bearer {KEY_B}") == "beta"
    assert registry.authenticate(f"Bearer {KEY_B}x") is None
    assert registry.authenticate(f"Basic {KEY_B}") is None
    assert registry.authenticate(KEY_B) is None
    assert registry.authenticate("Bearer ") is None
    assert registry.authenticate(None) is None


def test_only_digests_are_held() -> None:
    registry = ApiKeyRegistry.from_setting(f"acme:{KEY_A}")
    held = repr(vars(registry))
    assert KEY_A not in held
    assert hashlib.sha256(KEY_A.encode()).digest() in [digest for _, digest in registry._entries]


def test_key_file_with_comments_relative_path_and_digest_entries(tmp_path: Path) -> None:
    digest = hashlib.sha256(KEY_B.encode()).hexdigest()
    (tmp_path / "keys.txt").write_text(
        f"# production keys\nacme:{KEY_A}   # main\n\n  beta:sha256:{digest}\n", encoding="utf-8"
    )
    registry = ApiKeyRegistry.from_setting("@keys.txt", base_dir=tmp_path)
    assert registry.authenticate(f"Bearer {KEY_A}") == "acme"
    assert registry.authenticate(f"Bearer {KEY_B}") == "beta"
    assert registry.authenticate(f"Bearer sha256:{digest}") is None  # a digest is not a key
    absolute = ApiKeyRegistry.from_setting(f"@{tmp_path / 'keys.txt'}")
    assert absolute.tenants == {"acme", "beta"}


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("acme", "expected 'tenant:key'"),
        (f":{KEY_A}", "expected 'tenant:key'"),
        ("acme:short", "shorter than 16"),
        (f"bad name:{KEY_A}", "tenant name"),
        (f"anonymous:{KEY_A}", "reserved"),
        (f"acme:{KEY_A},beta:{KEY_A}", "same API key"),
        ("@/nonexistent/parla-keys.txt", "cannot read the API key file"),
    ],
)
def test_bad_settings_are_configuration_errors(setting: str, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        ApiKeyRegistry.from_setting(setting)


def test_error_messages_never_contain_the_key() -> None:
    with pytest.raises(ConfigurationError) as caught:
        ApiKeyRegistry.from_setting("acme:tooshortkey")
    assert "tooshortkey" not in str(caught.value)


@pytest.mark.parametrize("setting", [None, "", "  ", " , "])
def test_no_keys_refuses_to_start_unless_disabled(
    setting: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigurationError, match="PARLA_AUTH_DISABLED"):
        ApiKeyRegistry.from_setting(setting)
    with caplog.at_level(logging.WARNING, logger="service.auth"):
        registry = ApiKeyRegistry.from_setting(setting, auth_disabled=True)
    assert "AUTHENTICATION IS DISABLED" in caplog.text
    assert registry.authenticate(None) == ANONYMOUS_TENANT
    assert registry.authenticate("Bearer whatever-you-like-here") == ANONYMOUS_TENANT


def test_disabled_auth_still_recognises_configured_keys() -> None:
    registry = ApiKeyRegistry.from_setting(f"acme:{KEY_A}", auth_disabled=True)
    assert registry.authenticate(f"Bearer {KEY_A}") == "acme"
    assert registry.authenticate("Bearer unknown-key-unknown-key") == ANONYMOUS_TENANT


def test_fastapi_dependency_gives_tenant_or_401() -> None:
    registry = ApiKeyRegistry.from_setting(f"acme:{KEY_A}")
    current_tenant = tenant_dependency(registry)
    app = FastAPI()

    @app.get("/whoami")
    def whoami(tenant: str = Depends(current_tenant)) -> dict[str, str]:
        return {"tenant": tenant}

    with TestClient(app) as client:
        assert client.get("/whoami", headers={"Authorization": f"Bearer {KEY_A}"}).json() == {
            "tenant": "acme"
        }
        refused = client.get("/whoami", headers={"Authorization": "Bearer nope-nope-nope-nope"})
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["detail"]["error"]["code"] == "unauthorized"
        assert client.get("/whoami").status_code == 401
