"""Chat mode: a system prompt, a multi-turn transcript and a prompt line (Enter sends)."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Input

from localbvi.engine.types import DoneEvent, Message
from localbvi.sessions import MessageRole, SessionRecord
from localbvi.tui.session_log import SavedMessage, SessionHandle
from localbvi.tui.widgets.chat_message import ChatMessage, Outcome
from localbvi.tui.widgets.streaming_view import StreamingView

__all__ = ["ChatView"]

OUTCOMES: dict[str, Outcome] = {"complete": "done", "cancelled": "cancelled", "error": "error"}
"""A saved message's status as the transcript shows it."""


class ChatView(StreamingView):
    """The conversation with an instruct model (or a base model run through a template)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Stop reply", id="chat.cancel"),
        Binding("ctrl+r", "regenerate", "Regenerate", id="chat.regenerate"),
        Binding("ctrl+e", "edit_last", "Edit last", id="chat.edit_last", priority=True),
        Binding("ctrl+y", "copy_last", "Copy reply", id="chat.copy_last", show=False),
        Binding("ctrl+n", "new_chat", "New chat", id="chat.new", show=False),
    ]

    def __init__(self, *, system_prompt: str = "", id: str | None = None) -> None:
        super().__init__(id=id)
        self._initial_system = system_prompt
        self.turns: list[ChatMessage] = []
        self._reply: ChatMessage | None = None
        self.session: SessionHandle | None = None
        """Where this chat is saved (a new one after ctrl+n); created with the first message."""
        self._saved: dict[int, SavedMessage] = {}
        """The saved message behind each turn, by `id(turn)` (to mark it superseded)."""

    def compose(self) -> ComposeResult:
        yield Input(
            self._initial_system,
            placeholder="System prompt (optional): how the model should behave",
            id="system-prompt",
        )
        yield VerticalScroll(id="transcript")
        yield Input(placeholder="Message the model — Enter sends", id="prompt")

    @property
    def transcript(self) -> VerticalScroll:
        return self.query_one("#transcript", VerticalScroll)

    @property
    def prompt(self) -> Input:
        return self.query_one("#prompt", Input)

    def history(self) -> list[Message]:
        """The messages the model sees: the system prompt, then every finished turn."""
        out: list[Message] = []
        system = self.query_one("#system-prompt", Input).value.strip()
        if system:
            out.append(Message("system", system))
        for turn in self.turns:
            if turn.role in ("user", "assistant") and turn.outcome != "error":
                out.append(Message(turn.role, turn.content))  # type: ignore[arg-type]
        return out

    @on(Input.Submitted, "#prompt")
    def _send(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text:
            return
        if self.generating:
            self.notify("A reply is still streaming: press Escape to stop it first")
            return
        if not self.lapp.ready_for_generation():
            return
        self.prompt.value = ""
        turn = ChatMessage("user", text)
        self._add_turn(turn)
        self._saved[id(turn)] = self.lapp.sessions.add_message(self._session(), "user", text)
        self._ask()

    def _session(self) -> SessionHandle:
        if self.session is None:
            model = self.lapp.model
            system = self.query_one("#system-prompt", Input).value.strip()
            self.session = self.lapp.sessions.start(
                "chat",
                model.ref if model else "",
                "chat",
                system=system,
                meta={"display_name": model.display_name, "kind": model.kind} if model else {},
            )
        return self.session

    @on(Input.Submitted, "#system-prompt")
    def _system_done(self, event: Input.Submitted) -> None:
        event.stop()
        self.prompt.focus()

    def _add_turn(self, message: ChatMessage) -> None:
        self.turns.append(message)
        self.transcript.mount(message)
        self.transcript.scroll_end(animate=False)

    def _ask(self) -> None:
        messages = self.history()
        in_context = self.lapp.in_context_chat
        title, events = self.lapp.chat_events(messages)  # template, or in-context examples
        reply = ChatMessage("assistant", streaming=True, title=title, in_context=in_context)
        self._reply = reply
        self._add_turn(reply)
        self.start_generation(events)

    def on_stream_text(self, text: str) -> None:
        if self._reply is not None:
            self._reply.append(text)
            self.transcript.scroll_end(animate=False)

    def on_stream_done(self, done: DoneEvent) -> None:
        reply, self._reply = self._reply, None
        if reply is None:
            return
        role: MessageRole = "incontext" if reply.in_context else "assistant"
        self._saved[id(reply)] = self.lapp.sessions.add_reply(
            self._session(), reply.content, done, role
        )
        if done.finish_reason == "error":
            reply.finish("error", done.error)
            self.notify(done.error, title="The model could not answer", severity="error")
        elif done.finish_reason == "cancelled":
            reply.finish("cancelled")
        else:
            note = f"{done.tokens} tokens · {done.tokens_per_s:.1f} tok/s · {done.stop_detail}"
            reply.finish("done", note)
        self.transcript.scroll_end(animate=False)

    def action_cancel(self) -> None:
        if self.cancel_generation():
            return
        # Nothing to stop: Escape leaves the prompt, like in peer chat apps.
        self.screen.set_focus(None)

    def action_regenerate(self) -> None:
        if self.generating:
            self.notify("Wait for the reply to finish, or press Escape to stop it")
            return
        if not self.turns:
            self.notify("Nothing to regenerate yet")
            return
        if self.turns[-1].role == "assistant":
            self._drop_turns(len(self.turns) - 1)
        if not self.turns or self.turns[-1].role != "user":
            self.notify("Nothing to regenerate yet")
            return
        if self.lapp.ready_for_generation():
            self._ask()

    def action_edit_last(self) -> None:
        if self.generating:
            self.notify("Wait for the reply to finish, or press Escape to stop it")
            return
        users = [i for i, turn in enumerate(self.turns) if turn.role == "user"]
        if not users:
            self.notify("No message to edit yet")
            return
        index = users[-1]
        text = self.turns[index].content
        self._drop_turns(index)
        self.prompt.value = text
        self.prompt.cursor_position = len(text)
        self.prompt.focus()

    def _drop_turns(self, index: int) -> None:
        """Take `turns[index:]` off the screen; the saved session keeps them, superseded."""
        dropped = self.turns[index:]
        del self.turns[index:]
        saved = [s for turn in dropped if (s := self._saved.pop(id(turn), None)) is not None]
        if self.session is not None and saved:
            self.lapp.sessions.supersede(self.session, saved)
        for turn in dropped:
            turn.remove()

    def action_copy_last(self) -> None:
        replies = [turn for turn in self.turns if turn.role == "assistant" and turn.content]
        if not replies:
            self.notify("No reply to copy yet")
            return
        self.app.copy_to_clipboard(replies[-1].content)
        self.notify("Reply copied to the clipboard")

    def action_new_chat(self) -> None:
        self.cancel_generation()
        self._clear()
        self.prompt.focus()

    def _clear(self) -> None:
        self._reply = None
        self.session = None
        for turn in self.turns:
            turn.remove()
        self.turns.clear()
        self._saved.clear()

    def restore(self, record: SessionRecord) -> None:
        """Show a saved chat; new messages are added to the same session."""
        self.cancel_generation()
        self._clear()
        self.query_one("#system-prompt", Input).value = record.system
        # What the screen showed: messages replaced by regenerate or edit last stay hidden.
        for message in record.current:
            if message.role == "system":
                continue
            note = str(message.stats.get("error", "")) if message.status == "error" else ""
            # A base model's in-context reply is a reply of the conversation, headed as such.
            in_context = message.role == "incontext"
            turn = ChatMessage(
                "assistant" if in_context else message.role,
                message.content,
                outcome=OUTCOMES[message.status] if message.role != "user" else None,
                note=note,
                in_context=in_context,
            )
            self._add_turn(turn)
            self._saved[id(turn)] = SavedMessage(message.id)
        self.session = SessionHandle(
            "chat", record.model, record.mode, record.system, dict(record.meta), record.id
        )
        self.prompt.focus()
