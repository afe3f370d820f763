"""Inference engines behind one interface (`Engine`): local llama.cpp, remote servers, a fake."""

from localbvi.engine.base import Engine
from localbvi.engine.local import LocalEngine
from localbvi.engine.types import (
    Alternative,
    DoneEvent,
    Event,
    LoadConfig,
    LoadInfo,
    Message,
    Rendered,
    Sampling,
    Token,
    TokenEvent,
)

__all__ = [
    "Alternative",
    "DoneEvent",
    "Engine",
    "Event",
    "LoadConfig",
    "LoadInfo",
    "LocalEngine",
    "Message",
    "Rendered",
    "Sampling",
    "Token",
    "TokenEvent",
]
