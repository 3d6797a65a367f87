"""The Generate tab: pick a saved run and talk to it. Your prompt and the model's continuation appear as turns,
the continuation streaming in as it is sampled; the transcript can be saved into the run's generations/."""

from __future__ import annotations

import threading
import time
from contextlib import nullcontext
from typing import Any

from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.validation import Integer, Number
from textual.widgets import Button, Checkbox, Input, Label, Select, Static
from textual.worker import Worker, WorkerState, get_current_worker

from gptui.core.errors import GptuiError, InputError
from gptui.core.runs import RunInfo, RunStore
from gptui.core.sampling import INFERENCE_DTYPES, SamplingSettings, save_transcript, unescape
from gptui.core.workspace import Workspace
from gptui.tui.formatting import human_number, loss_text
from gptui.tui.widgets.attention import AttentionScreen
from gptui.tui.widgets.token_style import quoted, shade

STREAM_SECONDS = 0.05  # the sampling thread hands text over at most 20 times a second
PANEL_TOP = 8  # alternatives the probabilities panel lists


class Turn(Static):
    """One turn of the transcript: who spoke, and the text (which grows while the model streams).

    Scored (the probabilities toggle), it shows its tokens shaded by their probability, with a token cursor that
    the arrow keys and the mouse move; the tab's side panel shows the token under it."""

    BINDINGS = [
        Binding("left", "step(-1)", "Token", show=False),
        Binding("right", "step(1)", "Token", show=False),
        Binding("up", "turn(-1)", "Turn", show=False),
        Binding("down", "turn(1)", "Turn", show=False),
        Binding("home", "jump(0)", show=False),
        Binding("end", "jump(-1)", show=False),
    ]

    class CursorMoved(Message):
        def __init__(self, turn: Turn) -> None:
            super().__init__()
            self.turn = turn

    class LeaveTurn(Message):
        """The cursor ran off this turn's start (-1) or end (1), or asked for the turn above or below."""

        def __init__(self, turn: Turn, direction: int, jump: bool = False) -> None:
            super().__init__()
            self.turn, self.direction, self.jump = turn, direction, jump

    def __init__(self, who: str, text: str = "", *, model: bool = False) -> None:
        super().__init__(classes="turn model-turn" if model else "turn user-turn")
        self.who = who
        self.text = text
        self.border_title = who
        self.spans: list[str] = []  # each token's piece of the text, when scored
        self.scores: list[Any] = []  # gptui.core.inspect.TokenScore for each span
        self.shaded = False
        self.cursor = 0
        self.context = ""  # a model turn: the conversation fed before its prompt, and the prompt
        self.prompt = ""
        self.partner: Turn | None = None  # a model turn: the prompt's turn
        self.generated = ""  # a model turn: the reply, once it is complete

    @property
    def scored(self) -> bool:
        return bool(self.scores)

    def on_mount(self) -> None:
        self.update(Text(self.text or "…"))

    def append(self, piece: str) -> None:
        self.text += piece
        self.update(Text(self.text))

    def set_scores(self, spans: list[str], scores: list[Any]) -> None:
        self.spans, self.scores = spans, scores
        self.cursor = min(self.cursor, max(0, len(spans) - 1))
        self.redraw()

    def shade(self, on: bool) -> None:
        self.shaded = on
        self.can_focus = on and self.scored
        self.redraw()

    def redraw(self) -> None:
        if not (self.shaded and self.scored):
            self.update(Text(self.text or "…"))
            return
        text = Text()
        for k, (span, score) in enumerate(zip(self.spans, self.scores, strict=True)):
            style = shade(score.p) if score.p is not None else Style(dim=True)
            if k % 2:
                style += Style(underline=True)  # alternate tokens underlined: the boundaries stay visible
            if k == self.cursor and self.has_focus:
                style += Style(reverse=True, bold=True)
            style += Style.from_meta({"@click": f"pick({k})"})
            shown = span.replace("\n", "↵\n") if "\n" in span else span
            text.append(shown or "·", style=style)
        self.update(text)

    @property
    def current(self) -> Any:
        return self.scores[self.cursor] if self.scored else None

    def on_focus(self) -> None:
        self.redraw()
        self.post_message(self.CursorMoved(self))

    def on_blur(self) -> None:
        self.redraw()

    def action_pick(self, k: int) -> None:
        self.cursor = k
        if self.has_focus:
            self.redraw()
            self.post_message(self.CursorMoved(self))
        else:
            self.focus()

    def action_step(self, step: int) -> None:
        k = self.cursor + step
        if not 0 <= k < len(self.scores):
            self.post_message(self.LeaveTurn(self, step))
            return
        self.action_pick(k)

    def action_turn(self, direction: int) -> None:
        self.post_message(self.LeaveTurn(self, direction, jump=True))

    def action_jump(self, k: int) -> None:
        self.action_pick(k % len(self.scores) if self.scores else 0)


class ProbabilityPanel(Static):
    """The token under the cursor: its probability, rank, the entropy and the likeliest alternatives."""

    def show(self, score: Any) -> None:
        if score is None:
            self.update(Text("Click a token, or shift+tab from the prompt and move with the arrows, to see the "
                             "model's choices there.", style="italic"))
            return
        text = Text()
        text.append(f"{quoted(score.token, 20)}", style="bold")
        text.append(f"  id {score.id}\n")
        if score.p is None:
            text.append("the first token: nothing comes before it, so it has no probability", style="italic")
            self.update(text)
            return
        text.append("p       ", style="bold")
        text.append(f"{score.p:.4f}\n")
        text.append("rank    ", style="bold")
        text.append(f"{score.rank:,}\n")
        text.append("entropy ", style="bold")
        text.append(f"{score.entropy:.2f} bits\n\n")
        text.append("likeliest instead\n", style="bold underline")
        for token, p in score.top:
            text.append(f"{quoted(token, 10):<11}", style="bold" if token == score.token else "")
            text.append(f"{p:6.3f} ")
            text.append(" " * max(1, round(p * 8)), style=shade(p))
            text.append("\n")
        self.update(text)


class GenerateTab(Vertical):
    class Ready(Message):
        """Mounted (lazily, after the first frame): the app hands down what this tab shows."""

    BINDINGS = [
        Binding("ctrl+s", "stop", "Stop", tooltip="Stop generating"),
        Binding("ctrl+l", "clear", "Clear"),
        Binding("ctrl+o", "save", "Save", tooltip="Save the transcript in the run's generations/"),
        Binding("ctrl+n", "attention", "Attention", tooltip="The model's attention over the prompt (or the last turn)"),
        Binding("ctrl+y", "probabilities", "Probs", tooltip="Shade each token by its probability; arrows or the "
                "mouse move over the tokens, the side panel shows the alternatives"),
    ]

    class _Status(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class _Piece(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class _Done(Message):
        def __init__(self, error: str | None = None, speed: str = "") -> None:
            super().__init__()
            self.error, self.speed = error, speed

    class _Scored(Message):
        """Token scores for model turns: each turn with its prompt's and its reply's (spans, TokenScores)."""

        def __init__(self, scored: list[tuple[Turn, tuple[list[str], list[Any]], tuple[list[str], list[Any]]]]):
            super().__init__()
            self.scored = scored

    def __init__(self, workspace: Workspace, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.workspace = workspace
        self.runs: dict[str, RunInfo] = {}
        self.run_id: str | None = None
        # The run this app is training, and, once it ended, the run to select when a listing has its weights;
        # a run the person picks here meanwhile cancels both (their choice stands).
        self._training_run: str | None = None
        self._select_when_listed: str | None = None
        self.turns: list[Turn] = []
        self.last_settings = SamplingSettings()
        self._loaded: Any = None  # gptui.core.generate.LoadedModel, cached between prompts
        self._loaded_dtype = ""  # the precision asked for when it was loaded
        self._stop = threading.Event()
        self._worker: Worker | None = None
        self._focus_when_scored = False  # the probabilities toggle was switched on: focus the reply once scored

    def compose(self) -> ComposeResult:
        with Horizontal(id="gen-top"):
            yield Label("Run", classes="inline-label")
            yield Select([], prompt="no saved run yet", id="gen-run", compact=True)
            yield Static(id="gen-run-info")
        with Horizontal(id="gen-settings"):
            yield from self._setting("temperature", "gen-temperature", "0.8", [Number(minimum=0)])
            yield from self._setting("top-k", "gen-top-k", "0", [Integer(minimum=0)], type_="integer")
            yield from self._setting("top-p", "gen-top-p", "1.0", [Number(minimum=0, maximum=1)])
            yield from self._setting("max tokens", "gen-max-tokens", "300", [Integer(minimum=1, maximum=100_000)],
                                     type_="integer")
            yield from self._setting("seed", "gen-seed", "", [Integer(minimum=0)], type_="integer",
                                     placeholder="random")
            yield from self._setting("stop at", "gen-stop", "", [], placeholder="text; \\n newline")
            yield Label("context", classes="gen-label")
            yield Checkbox("whole chat", False, id="gen-context", compact=True,
                           tooltip="Feed the whole conversation so far as context, not just the new prompt")
            yield Label("probs", classes="gen-label")
            yield Checkbox("shade", False, id="gen-probs", compact=True,
                           tooltip="Shade each token by the probability the model gave it (ctrl+y)")
            yield Label("precision", classes="gen-label")
            yield Select([(d, d) for d in INFERENCE_DTYPES], value="auto", allow_blank=False, id="gen-dtype",
                         compact=True, tooltip="Weights cast once for generating: auto takes bfloat16 where the "
                         "device computes it natively; float32 gives the trained model's exact logits")
        with Horizontal(id="gen-middle"):
            with VerticalScroll(id="gen-transcript"):
                yield Static("Type a prompt below and press Enter; the model continues it.", id="gen-empty")
            panel = ProbabilityPanel(id="gen-probs-panel")
            panel.display = False  # shown by the probs toggle (set here: on_mount may run while the app quits)
            yield panel
        with Horizontal(id="gen-input-row"):
            yield Input(placeholder="your prompt, then Enter (empty: from a newline)", id="gen-prompt", compact=True)
            yield Button("Send", id="gen-send", variant="primary", compact=True)
            yield Button("Stop", id="gen-stop-button", variant="error", compact=True, disabled=True)
            yield Button("Clear", id="gen-clear", compact=True)
            yield Button("Save", id="gen-save", compact=True)

    def on_mount(self) -> None:
        self.post_message(self.Ready())

    def _setting(self, label: str, id: str, value: str, validators, type_: str = "text", placeholder: str = ""):
        yield Label(label, classes="gen-label")
        yield Input(value, id=id, validators=validators, type=type_, placeholder=placeholder, compact=True,
                    classes="gen-value", valid_empty=id == "gen-seed")

    # --- runs ------------------------------------------------------------------------------------------------

    def set_runs(self, infos: list[RunInfo], select: str | None = None) -> None:
        """The runs that have weights to load (newest first); keeps the current choice unless told otherwise, or
        unless a run this app trained has just ended (see `training_run`)."""
        usable = [i for i in infos if not i.damaged and i.path and i.has_weights]
        usable.sort(key=lambda i: i.created, reverse=True)
        new = {i.id: i for i in usable}
        if select is None and self._select_when_listed in new:
            select, self._select_when_listed = self._select_when_listed, None
        choice = select or (self.run_id if self.run_id in new else None) or (usable[0].id if usable else None)
        picker = self.query_one("#gen-run", Select)
        if list(new) != list(self.runs):
            with self.prevent(Select.Changed):
                picker.set_options([(i.id, i.id) for i in usable])
        self.runs = new
        if choice is not None and picker.value != choice:
            with self.prevent(Select.Changed):
                picker.value = choice
        self._choose(choice)

    def training_run(self, run_id: str, status: str) -> None:
        """A run this app trains started (status "running") or ended (any other status). The run that ended is
        selected as soon as a listing offers its weights, unless the person picked a run here since it started:
        "train, then chat" talks to the model just trained, not to the newest run from before."""
        if status == "running":
            self._training_run, self._select_when_listed = run_id, None
        elif run_id == self._training_run:
            self._training_run, self._select_when_listed = None, run_id

    def open_run(self, run_id: str) -> None:
        if run_id not in self.runs:
            self.notify(f"Run {run_id} has no saved weights to load yet.", severity="warning")
            return
        self._picked()
        self.set_runs(list(self.runs.values()), select=run_id)

    @on(Select.Changed, "#gen-run")
    def _run_picked(self, event: Select.Changed) -> None:
        event.stop()
        self._picked()
        self._choose(event.value if isinstance(event.value, str) else None)

    def _picked(self) -> None:
        """The person chose a run (here, or with the Runs tab's "g"): no run that ends later replaces it."""
        self._training_run = self._select_when_listed = None

    def _choose(self, run_id: str | None) -> None:
        if run_id != self.run_id:
            self.run_id = run_id
            self._loaded = None  # loaded again, lazily, on the next prompt
        info = self.runs.get(run_id or "")
        text = "Train a model first (Train tab)." if info is None else (
            f"{human_number(info.params)} params · {info.tokenizer} · {info.steps:,} steps · "
            f"val loss {loss_text(info.best_val_loss)}"
        )
        self.query_one("#gen-run-info", Static).update(text)

    # --- sending a prompt --------------------------------------------------------------------------------------

    @property
    def generating(self) -> bool:
        return self._worker is not None and self._worker.state in (WorkerState.PENDING, WorkerState.RUNNING)

    @on(Input.Submitted, "#gen-prompt")
    @on(Button.Pressed, "#gen-send")
    def action_send(self) -> None:
        if self.generating:
            self.notify("Still generating: stop it first (ctrl+s).", severity="warning")
            return
        if self.run_id is None:
            self.notify("No run to generate from: train one first.", severity="warning")
            return
        try:
            settings = self.sampling_settings()
        except ValueError as exc:
            self.notify(str(exc), severity="error", title="Check the settings")
            return
        prompt_input = self.query_one("#gen-prompt", Input)
        prompt = unescape(prompt_input.value)
        context = self.conversation_text() if self.query_one("#gen-context", Checkbox).value else ""
        prompt_input.value = ""
        self.last_settings = settings
        asked = Turn("You", prompt or "(empty prompt)")
        reply = Turn(f"Model · {self.run_id}", model=True)
        reply.context, reply.prompt, reply.partner = context, prompt, asked
        self._add_turn(asked)
        self._add_turn(reply)
        self._stop.clear()
        dtype = self.query_one("#gen-dtype", Select).value
        self._worker = self._generate(self.run_id, context + prompt, settings, str(dtype),
                                      reply if self.probabilities else None)
        self._sync_buttons()

    def sampling_settings(self) -> SamplingSettings:
        """The sampling settings typed in, or ValueError naming the field that is wrong."""
        def value(id: str, name: str) -> str:
            field = self.query_one(f"#{id}", Input)
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                raise ValueError(f"{name}: {'; '.join(result.failure_descriptions)}")
            return field.value.strip()

        seed = value("gen-seed", "seed")
        settings = SamplingSettings(
            temperature=float(value("gen-temperature", "temperature")),
            top_k=int(value("gen-top-k", "top-k")),
            top_p=float(value("gen-top-p", "top-p")),
            max_new_tokens=int(value("gen-max-tokens", "max tokens")),
            seed=int(seed) if seed else None,
            stop=unescape(self.query_one("#gen-stop", Input).value),
        )
        try:
            return settings.check()
        except InputError as exc:
            raise ValueError(str(exc)) from None

    def conversation_text(self) -> str:
        """The conversation as one text, the way the model reads it: each turn continues the last."""
        return "".join(t.text for t in self.turns if t.text != "(empty prompt)")

    def _add_turn(self, turn: Turn) -> None:
        transcript = self.query_one("#gen-transcript", VerticalScroll)
        empty = self.query("#gen-empty")
        if empty:
            empty.remove()
        self.turns.append(turn)
        transcript.mount(turn)
        transcript.scroll_end(animate=False)

    def _model(self, run_id: str, dtype: str) -> Any:
        """The run's model, loaded once and kept between prompts (in a worker thread: this loads torch)."""
        from gptui.core.generate import load_model

        loaded = self._loaded
        if loaded is None or (loaded.run.id, self._loaded_dtype) != (run_id, dtype):
            self.post_message(self._Status(f"loading {run_id}…"))
            self._loaded = None  # let the previous copy go before loading another
            loaded = load_model(RunStore(self.workspace).resolve(run_id), dtype=dtype)
            self._loaded, self._loaded_dtype = loaded, dtype
        return loaded

    @work(thread=True, exclusive=True, exit_on_error=False, group="generate")
    def _generate(self, run_id: str, prompt: str, settings: SamplingSettings, dtype: str,
                  scored: Turn | None = None) -> None:
        """Stream the continuation of `prompt`; with `scored` (the probabilities toggle is on), score that turn's
        prompt and reply once the reply is done, so the streaming itself goes as fast as with the toggle off."""
        worker = get_current_worker()
        try:
            from gptui.core.generate import DecodeStats, stream_text  # loads torch
            from gptui.core.inspect import recording, score_exchange

            loaded = self._model(run_id, dtype)
            self.post_message(self._Status("generating…"))
            pending: list[str] = []
            reply: list[str] = []
            last = time.monotonic()
            stats = DecodeStats()
            # scoring keeps a copy of each token's logits as it is sampled; off, generation is as it always was
            with recording(loaded) if scored is not None else nullcontext() as recorder:
                for piece in stream_text(loaded, prompt, settings, stats=stats,
                                         should_stop=lambda: self._stop.is_set() or worker.is_cancelled):
                    pending.append(piece)
                    if time.monotonic() - last >= STREAM_SECONDS:
                        self.post_message(self._Piece("".join(pending)))
                        reply += pending
                        pending.clear()
                        last = time.monotonic()
            if pending:
                self.post_message(self._Piece("".join(pending)))
                reply += pending
            self.post_message(self._Done(speed=f"{stats.tokens:,} tokens · {stats.describe(loaded)}"))
            if scored is not None and reply:
                parts = score_exchange(loaded.model, loaded.tokenizer, scored.context, scored.prompt,
                                       "".join(reply), PANEL_TOP, recorder)
                self.post_message(self._Scored([(scored, *parts)]))
        except GptuiError as exc:
            self.post_message(self._Done(error=str(exc)))
        except Exception as exc:  # one line on screen, never a traceback
            self.post_message(self._Done(error=f"{type(exc).__name__}: {exc}"))

    @work(thread=True, exclusive=True, exit_on_error=False, group="score")
    def _score_turns(self, run_id: str, dtype: str, turns: list[Turn]) -> None:
        """Score the replies already on screen (the toggle was switched on after them)."""
        try:
            from gptui.core.inspect import score_exchange  # loads torch

            loaded = self._model(run_id, dtype)
            self.post_message(self._Scored([
                (turn, *score_exchange(loaded.model, loaded.tokenizer, turn.context, turn.prompt, turn.generated,
                                       PANEL_TOP))
                for turn in turns
            ]))
            self.post_message(self._Status(""))
        except Exception as exc:  # one line on screen, never a traceback
            why = str(exc) if isinstance(exc, GptuiError) else f"{type(exc).__name__}: {exc}"
            self.app.call_from_thread(self.notify, why, severity="error", title="Cannot score the tokens")

    # --- probabilities ----------------------------------------------------------------------------------------

    @property
    def probabilities(self) -> bool:
        return self.query_one("#gen-probs", Checkbox).value

    def action_probabilities(self) -> None:
        box = self.query_one("#gen-probs", Checkbox)
        box.value = not box.value

    @on(Checkbox.Changed, "#gen-probs")
    def _probabilities_toggled(self, event: Checkbox.Changed) -> None:
        event.stop()
        on = event.value
        self.query_one("#gen-probs-panel", ProbabilityPanel).display = on
        for turn in self.turns:
            turn.shade(on)
        if not on:
            self.query_one("#gen-prompt", Input).focus()
            return
        self.query_one("#gen-probs-panel", ProbabilityPanel).show(None)
        unscored = [t for t in self.turns if t.partner is not None and t.generated and not t.scored]
        self._focus_when_scored = bool(unscored)
        if unscored and self.run_id is not None:
            # the replies of the model loaded now (a reply from another run is scored by this run's model)
            self._score_turns(self.run_id, str(self.query_one("#gen-dtype", Select).value), unscored)
        self._focus_last_scored()

    @on(_Scored)
    def _scored(self, message: _Scored) -> None:
        for turn, prompt, reply in message.scored:
            if turn not in self.turns:  # cleared meanwhile
                continue
            turn.set_scores(*reply)
            if turn.partner is not None and turn.prompt:
                turn.partner.set_scores(*prompt)
            for t in (turn, turn.partner):
                if t is not None:
                    t.shade(self.probabilities)
        if self.probabilities and self._focus_when_scored:  # switched on: the cursor goes to the last reply
            self._focus_when_scored = False
            self._focus_last_scored()

    def _focus_last_scored(self) -> None:
        scored = [t for t in self.turns if t.scored]
        if scored:
            scored[-1].focus()
            self.query_one("#gen-transcript", VerticalScroll).scroll_to_widget(scored[-1], animate=False)

    @on(Turn.CursorMoved)
    def _cursor_moved(self, message: Turn.CursorMoved) -> None:
        message.stop()
        self.query_one("#gen-probs-panel", ProbabilityPanel).show(message.turn.current)

    @on(Turn.LeaveTurn)
    def _leave_turn(self, message: Turn.LeaveTurn) -> None:
        message.stop()
        scored = [t for t in self.turns if t.scored]
        at = scored.index(message.turn) if message.turn in scored else -1
        k = at + message.direction
        if at < 0 or not 0 <= k < len(scored):
            return
        target = scored[k]
        target.cursor = 0 if message.direction > 0 or message.jump else len(target.scores) - 1
        target.focus()
        self.query_one("#gen-transcript", VerticalScroll).scroll_to_widget(target, animate=False)

    @on(_Status)
    def _show_status(self, message: _Status) -> None:
        if message.text:
            self.query_one("#gen-run-info", Static).update(Text(message.text))
        else:
            self._choose(self.run_id)

    @on(_Piece)
    def _show_piece(self, message: _Piece) -> None:
        if self.turns and "model-turn" in self.turns[-1].classes:
            self.turns[-1].append(message.text)
            self.query_one("#gen-transcript", VerticalScroll).scroll_end(animate=False)

    @on(_Done)
    def _done(self, message: _Done) -> None:
        self._choose(self.run_id)
        reply = self.turns[-1] if self.turns and "model-turn" in self.turns[-1].classes else None
        if reply is not None and not message.error:
            reply.generated = reply.text
        if message.speed and reply is not None:
            reply.border_subtitle = message.speed  # on the reply itself, at any width
        if message.error:
            self.notify(message.error, severity="error", title="Generation failed")
            if reply is not None and not reply.text:
                reply.append(f"({message.error})")
        elif self.turns and not self.turns[-1].text:
            self.turns[-1].append("(no text: the stop string came first)")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker is self._worker:
            self._sync_buttons()

    def _sync_buttons(self) -> None:
        busy = self.generating
        self.query_one("#gen-send", Button).disabled = busy
        self.query_one("#gen-stop-button", Button).disabled = not busy

    def action_attention(self) -> None:
        if self.run_id is None:
            self.notify("No run to look into: train one first.", severity="warning")
            return
        typed = unescape(self.query_one("#gen-prompt", Input).value)
        text = typed or (self.turns[-1].text if self.turns and self.turns[-1].text != "(empty prompt)" else "")
        self.app.push_screen(AttentionScreen(self.workspace, self.run_id, text))

    # --- stop, clear, save -----------------------------------------------------------------------------------

    def cancel(self) -> None:
        self._stop.set()

    def on_unmount(self) -> None:
        self._stop.set()

    @on(Button.Pressed, "#gen-stop-button")
    def action_stop(self) -> None:
        if self.generating:
            self._stop.set()
        else:
            self.notify("Not generating.", severity="warning")

    @on(Button.Pressed, "#gen-clear")
    def action_clear(self) -> None:
        if self.generating:
            self._stop.set()
        for turn in self.turns:
            turn.remove()
        self.turns.clear()
        self.query_one("#gen-probs-panel", ProbabilityPanel).show(None)

    @on(Button.Pressed, "#gen-save")
    def action_save(self) -> None:
        if not self.turns or self.run_id is None:
            self.notify("Nothing to save yet.", severity="warning")
            return
        prompts = [t.text for t in self.turns if "user-turn" in t.classes]
        body = "\n\n".join(f"### {t.who}\n{t.text}" for t in self.turns)
        context = "whole conversation" if self.query_one("#gen-context", Checkbox).value else "each prompt alone"
        try:
            run = RunStore(self.workspace).resolve(self.run_id)
            path = save_transcript(run, self.last_settings, prompts[0] if len(prompts) == 1 else prompts, body,
                                   "chat", context=context)
        except (GptuiError, OSError) as exc:
            self.notify(f"Could not save: {exc}", severity="error")
            return
        self.last_saved = path
        self.notify(f"Saved {path.name} in {self.run_id}/generations/.", title="Transcript saved")

