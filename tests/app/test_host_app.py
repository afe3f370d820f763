"""The app's load worker around the model host: a download it starts can be cancelled, and the
model in use stays (FakeEngine, simulated download)."""

from __future__ import annotations

from localbvi.engine.fake import FakeEngine
from tests.helpers import INSTRUCT, SIZE, AppFactory, notifications, static_services, wait_until


async def test_cancelling_the_download_of_a_model_being_opened_keeps_the_current_one(
    fake_app: AppFactory,
) -> None:
    services = static_services()
    services.download_s, services.steps = 3.0, 30
    app = fake_app(services=services)
    async with app.run_test(size=SIZE, notifications=True) as pilot:
        await wait_until(pilot, lambda: app.model is not None)
        app.open_model("big-it", display_name="Big 8B Instruct")
        await wait_until(pilot, lambda: bool(app.downloads.tasks), what="download task")
        task = app.downloads.tasks[0]
        await wait_until(pilot, lambda: task.progress is not None, what="progress")
        app.cancel_download(task)
        await wait_until(pilot, lambda: app.loading is None, what="load ended")
        assert task.state == "cancelled" and "cancelled" in task.error
        assert any("Could not load big-it" in n and "still loaded" in n for n in notifications(app))
        assert app.model is not None and app.model.ref == INSTRUCT.path
        engine = app.engine
        assert isinstance(engine, FakeEngine) and engine.loads == [INSTRUCT.path]
