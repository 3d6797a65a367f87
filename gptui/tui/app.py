"""The gptui app: five tabs over a workspace (Corpus, Model, Train, Generate, Runs).

The app wires the tabs together: tabs post messages up, the app hands state down as attributes. It imports
no torch; the Train and Generate tabs import the engine's torch modules inside their workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.lazy import Lazy
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from gptui.core.config import Config
from gptui.core.runs import RunInfo
from gptui.core.workspace import Workspace
from gptui.tui.tabs.corpus import TOKENIZER_SETTINGS, CorpusTab
from gptui.tui.tabs.generate import GenerateTab
from gptui.tui.tabs.model import ModelTab
from gptui.tui.tabs.runs import RunsTab
from gptui.tui.tabs.train import TrainTab
from gptui.tui.widgets.modals import ConfirmModal

T = TypeVar("T")
TABS = ("corpus", "model", "train", "generate", "runs")
FOCUS_ON_SHOW = {
    "corpus": "#corpus-table", "model": "#preset", "train": "#train-start", "generate": "#gen-prompt",
    "runs": "#runs-table",
}


class GptuiApp(App[None]):
    CSS_PATH = Path(__file__).with_name("app.tcss")  # absolute, so subclasses elsewhere find it too
    TITLE = "gptui"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (32, "-tall")]
    # The tab keys are shown in the tab labels (F1 Corpus …), leaving the footer to the actions.
    BINDINGS = [
        Binding("f1", "show_tab('corpus')", "Corpus", show=False),
        Binding("f2", "show_tab('model')", "Model", show=False),
        Binding("f3", "show_tab('train')", "Train", show=False),
        Binding("f4", "show_tab('generate')", "Generate", show=False),
        Binding("f5", "show_tab('runs')", "Runs", show=False),
        Binding("ctrl+t", "start_training", "Train"),
        Binding("ctrl+s", "stop_training", "Stop"),
        Binding("ctrl+r", "resume_training", "Resume", show=False),
        Binding("ctrl+q", "quit", "Quit", priority=True),
        Binding("q", "quit", "Quit", show=False),
    ]

    def __init__(self, workspace: Workspace, *, poll: bool = True) -> None:
        super().__init__()
        self.workspace = workspace.ensure()
        self.poll = poll  # tests switch the models/ polling off to keep things deterministic
        # what the tabs share, kept here and handed down (a tab may mount after the message that changed it)
        self.corpus: str | None = None
        self.config: Config | None = None
        self.problems: dict[str, str] = {}
        self.run_infos: list[RunInfo] | None = None
        self.processes = 1  # the Train tab's processes setting (the Model tab counts tokens per step with it)

    def compose(self) -> ComposeResult:
        # The hidden tabs mount just after the first frame (Lazy): the Corpus tab shows sooner, and until a
        # tab is mounted the app keeps what it would hand down to it (see _hand_down).
        with TabbedContent(initial="corpus", id="tabs"):
            with TabPane("F1 Corpus", id="corpus"):
                yield CorpusTab(self.workspace, id="corpus-tab")
            with TabPane("F2 Model", id="model"):
                yield Lazy(ModelTab(id="model-tab"))
            with TabPane("F3 Train", id="train"):
                yield Lazy(TrainTab(self.workspace, id="train-tab"))
            with TabPane("F4 Generate", id="generate"):
                yield Lazy(GenerateTab(self.workspace, id="generate-tab"))
            with TabPane("F5 Runs", id="runs"):
                yield Lazy(RunsTab(self.workspace, id="runs-tab", poll=self.poll))
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = str(self.workspace.home)
        self.query_one("#corpus-table").focus()

    @property
    def tabs_mounted(self) -> bool:
        """True once the lazily mounted tabs are all in place (a moment after the first frame)."""
        return all(self._mounted(t) is not None for t in (ModelTab, TrainTab, GenerateTab, RunsTab))

    # --- the tabs, by name -----------------------------------------------------------------------------------

    @property
    def corpus_tab(self) -> CorpusTab:
        return self.query_one(CorpusTab)

    @property
    def model_tab(self) -> ModelTab:
        return self.query_one(ModelTab)

    @property
    def train_tab(self) -> TrainTab:
        return self.query_one(TrainTab)

    @property
    def generate_tab(self) -> GenerateTab:
        return self.query_one(GenerateTab)

    @property
    def runs_tab(self) -> RunsTab:
        return self.query_one(RunsTab)

    def action_show_tab(self, name: str) -> None:
        self.query_one("#tabs", TabbedContent).active = name
        self.call_after_refresh(self._focus_tab, name)

    def _focus_tab(self, name: str) -> None:
        target = self.query(FOCUS_ON_SHOW[name])
        if target:
            target.first().focus()

    # --- messages up, attributes down ------------------------------------------------------------------------

    def _mounted(self, tab_type: type[T]) -> T | None:
        return next(iter(self.query(tab_type)), None)

    def _hand_down(self) -> None:
        """Give every mounted tab the shared state it shows."""
        if (train := self._mounted(TrainTab)) is not None:
            train.update_inputs(self.corpus, self.config, self.problems)
        if (generate := self._mounted(GenerateTab)) is not None and self.run_infos is not None:
            generate.set_runs(self.run_infos)
        if (model := self._mounted(ModelTab)) is not None:
            model.set_processes(self.processes)

    def on_train_tab_ready(self, message: TrainTab.Ready) -> None:
        self._hand_down()

    def on_generate_tab_ready(self, message: GenerateTab.Ready) -> None:
        self._hand_down()

    def on_corpus_tab_selected(self, message: CorpusTab.Selected) -> None:
        self.corpus = message.name
        self._hand_down()

    def on_corpus_tab_tokenizer_changed(self, message: CorpusTab.TokenizerChanged) -> None:
        if (model := self._mounted(ModelTab)) is not None:
            model.set_values(message.values)

    def on_model_tab_config_changed(self, message: ModelTab.ConfigChanged) -> None:
        # the lazily mounted Model tab may announce its first values as the app is closing, its tabs gone
        if (corpus := self._mounted(CorpusTab)) is not None:
            corpus.set_tokenizer_values({k: message.values[k] for k in TOKENIZER_SETTINGS})
        self.config, self.problems = message.config, message.problems
        self._hand_down()

    def on_train_tab_processes_changed(self, message: TrainTab.ProcessesChanged) -> None:
        self.processes = message.processes
        self._hand_down()

    def on_train_tab_run_changed(self, message: TrainTab.RunChanged) -> None:
        if (generate := self._mounted(GenerateTab)) is not None:
            generate.training_run(message.run_id, message.status)
        self.runs_tab.poll()
        self.corpus_tab.refresh_cache_status()

    def on_runs_tab_listed(self, message: RunsTab.Listed) -> None:
        self.run_infos = message.infos
        self._hand_down()

    def on_runs_tab_open_in_generate(self, message: RunsTab.OpenInGenerate) -> None:
        self.action_show_tab("generate")
        self.generate_tab.open_run(message.run_id)

    def on_runs_tab_resume_in_train(self, message: RunsTab.ResumeInTrain) -> None:
        self.action_show_tab("train")
        self.train_tab.set_resume(message.run_id)
        self.train_tab.action_resume()

    def on_runs_tab_fine_tune_in_train(self, message: RunsTab.FineTuneInTrain) -> None:
        """The picked corpus selected, the run's settings in the form (the shape it keeps, the training settings
        it had, to change before Start), and the Train tab ready to fine-tune it."""
        self.corpus_tab.reload(select=message.corpus)
        self.corpus = message.corpus
        self.model_tab.set_values(message.settings)
        self.action_show_tab("train")
        self.train_tab.set_fine_tune(message.run_id, message.settings)
        self._hand_down()
        self.notify(f"Start fine-tunes {message.run_id} on {message.corpus}; change its training settings on the "
                    "Model tab first if you like.", title="Fine-tune", timeout=6)

    # --- actions for keys and the command palette --------------------------------------------------------

    def action_start_training(self) -> None:
        self.action_show_tab("train")
        self.train_tab.action_start()

    def action_stop_training(self) -> None:
        self.train_tab.action_stop()

    def action_resume_training(self) -> None:
        self.action_show_tab("train")
        self.train_tab.action_resume()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("Start training", "Train a new model on the selected corpus", self.action_start_training)
        yield SystemCommand("Stop training", "Stop the run after this step; it is evaluated and saved",
                            self.action_stop_training)
        yield SystemCommand("Resume training", "Continue the last stopped run", self.action_resume_training)
        yield SystemCommand("Prepare corpus", "Train the tokenizer and encode the selected corpus",
                            self._prepare_corpus)
        yield SystemCommand("Open a run", "Browse runs: settings, curves and log", lambda: self.action_show_tab("runs"))
        yield SystemCommand("Fine-tune a run", "Train the selected run further on a corpus you pick",
                            lambda: self._runs_action("fine_tune"))
        yield SystemCommand("Export a run", "Write the selected run as a Hugging Face transformers folder",
                            lambda: self._runs_action("export"))
        yield SystemCommand("Generate", "Talk to the newest (or chosen) model", lambda: self.action_show_tab("generate"))
        yield SystemCommand("Save transcript", "Save the Generate transcript in the run's generations/",
                            lambda: self.generate_tab.action_save())
        for name in TABS:
            yield SystemCommand(f"Go to {name.title()}", f"Show the {name.title()} tab",
                                lambda name=name: self.action_show_tab(name))

    def _runs_action(self, name: str) -> None:
        self.action_show_tab("runs")
        getattr(self.runs_tab, f"action_{name}")()

    def _prepare_corpus(self) -> None:
        self.action_show_tab("corpus")
        self.corpus_tab.action_prepare()

    # --- quitting: a training run is stopped and saved first -------------------------------------------------

    async def action_quit(self) -> None:
        train = self._mounted(TrainTab)
        if train is not None and train.running:
            where = " on several processes" if train.processes_running else ""
            self.push_screen(
                ConfirmModal(f"A run is training{where}. Stop it (what it learned is saved) and quit?",
                             yes="Stop and quit"),
                self._quit_answer,
            )
            return
        if (generate := self._mounted(GenerateTab)) is not None:
            generate.cancel()  # a generation thread stops within one token
        if not self.tabs_mounted:  # quit in the first instant: let the lazy mounts land first, then exit
            self.call_after_refresh(self.exit)
            return
        self.exit()

    def _quit_answer(self, yes: bool | None) -> None:
        if yes:
            self.run_worker(self._stop_and_exit(), group="quit", exclusive=True)

    async def _stop_and_exit(self) -> None:
        self.notify("Stopping the run: a last evaluation, then its weights and checkpoint are saved…", timeout=60)
        self.train_tab.stop("stopped: gptui was closed")
        await self.train_tab.wait()
        self.exit()


def leave_a_core_for_the_interface() -> None:
    """Let torch use all cores but one, so keys stay quick while a model trains.

    Measured on 2 cores: with torch's default of every core, its OpenMP threads starve the UI thread (a tab key
    took 90 ms median, 250 ms worst) and, on a busy machine, training got slower too; with one thread, 10 ms.
    torch reads OMP_NUM_THREADS when it is first imported, which happens later, inside a worker, so this covers
    training and generation alike; a value the person set is kept."""
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) - 1))


def make_app(home: Path | str, *, poll: bool = True) -> GptuiApp:
    """The app over the workspace at `home` (created if missing); tests build theirs with this."""
    return GptuiApp(Workspace(home), poll=poll)


def run_app(workspace: Workspace) -> None:
    leave_a_core_for_the_interface()
    GptuiApp(workspace).run()
