"""App-layer fixtures: a FakeEngine app with fixed models (helpers live in tests/helpers.py)."""

from __future__ import annotations

import pytest

from localbvi.engine.fake import FakeEngine
from localbvi.tui import LocalbviApp, make_app
from localbvi.tui.services import StaticServices
from tests.helpers import INSTRUCT, AppFactory, static_services, track_notifications


@pytest.fixture
def fake_app() -> AppFactory:
    """Build an app on a FakeEngine; keyword arguments go to FakeEngine and make_app."""

    def build(
        model_ref: str | None = INSTRUCT.path,
        mode: str | None = None,
        services: StaticServices | None = None,
        **engine_kwargs: object,
    ) -> LocalbviApp:
        engine = FakeEngine(**engine_kwargs)  # type: ignore[arg-type]
        app = make_app(
            lambda: engine,
            model_ref=model_ref,
            mode=mode,
            services=services or static_services(),
            check_online=True,
        )
        return track_notifications(app)

    return build
