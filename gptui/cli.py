"""The command line: `gptui` opens the TUI; subcommands run the same engine headless.

Exit status: 0 success, 2 bad usage or input, 1 failure; errors are one line on stderr (a traceback only
with --debug). Heavy modules (torch, Textual) are imported inside the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from gptui.core.config import DEFAULT_PRESET, PRESETS
from gptui.core.errors import GptuiError, InputError
from gptui.core.sampling import INFERENCE_DTYPES


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, as the contract says
        # a value thousands of characters long is shown by its start and its length, so the line stays a line
        message = re.sub(r"'([^'\n]{40})[^'\n]+'",
                         lambda m: f"'{m.group(1)}…' ({len(m.group(0)) - 2:,} characters)",
                         " ".join(message.split()))
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="gptui", description="Train a small GPT on a text corpus and talk to it.")
    p.add_argument("--home", help="workspace folder with inputs/ and models/ (default: $GPTUI_HOME or .)")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--version", action="version", version=f"gptui {_version()}")
    sub = p.add_subparsers(dest="command", parser_class=ArgumentParser)

    t = sub.add_parser("train", help="train a model headless")
    t.add_argument("--input", help="corpus in inputs/: a .txt, .txt.gz, .jsonl(.gz) or .parquet file or a folder, "
                                   "named with or without its extension")
    t.add_argument("--preset", default=None, help=f"{', '.join(PRESETS)} (default: {DEFAULT_PRESET})")
    t.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable); `gptui settings` lists them")
    t.add_argument("--name", help="name for the run folder (sanitised)")
    t.add_argument("--resume", metavar="RUN", help="continue a stopped run (id or unique prefix)")
    t.add_argument("--init-from", metavar="RUN",
                   help="fine-tune: a new run on --input starting from RUN's best weights and tokenizer (its model "
                        "shape is kept; other settings are RUN's unless --preset or --set give them)")
    t.add_argument("--max-minutes", type=float,
                   help="stop after this many minutes of training (with --resume: this many more minutes; "
                        "without it, a resume keeps the run's own budget, counted over the run's whole time)")
    t.add_argument("--replace-errors", action="store_true", help="replace bytes that are not UTF-8")
    t.add_argument("--skip-bad-rows", action="store_true",
                   help="skip (and count) JSON Lines lines or Parquet rows without text instead of stopping")
    t.add_argument("--workers", type=_worker_count, default=0, metavar="N",
                   help="threads that encode the corpus when it is prepared (default 0: one per core)")
    d = t.add_argument_group("several processes (torchrun, DistributedDataParallel)")
    d.add_argument("--nproc-per-node", type=int, metavar="N",
                   help="processes on this machine (one per GPU on CUDA; gloo on the CPU)")
    d.add_argument("--nnodes", type=int, metavar="M", help="machines in the job (default 1)")
    d.add_argument("--node-rank", type=int, metavar="R", help="this machine's number, 0 to M-1")
    d.add_argument("--master-addr", metavar="A", help="address of the machine with --node-rank 0")
    d.add_argument("--master-port", type=int, metavar="P", help="a free port on that machine")
    d.add_argument("--rdzv-endpoint", metavar="HOST:PORT", help="instead of --master-*: a rendezvous point")
    d.add_argument("--rdzv-timeout", type=float, metavar="S",
                   help="seconds to wait for the other machines to join (default 300)")

    g = sub.add_parser("generate", help="generate text from a saved run")
    g.add_argument("--run", help="run id or unique prefix (default: newest)")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--prompt", default="", help="text to continue")
    src.add_argument("--prompt-file", help="file whose text to continue")
    g.add_argument("--max-new-tokens", type=int, default=500)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0: off)")
    g.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", default="", help="stop when this text appears (\\n\\n for a blank line)")
    g.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    g.add_argument("--dtype", default="auto", choices=INFERENCE_DTYPES,
                   help="precision of the weights while generating (auto: bfloat16 where the device has it)")
    g.add_argument("--num-samples", type=int, default=1, metavar="N",
                   help="continuations decoded together in one batch (1-64), printed one after another")
    g.add_argument("--save", action="store_true", help="save the transcript in the run's generations/")

    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--json", action="store_true", help="print a JSON list")

    pr = sub.add_parser("prepare", help="train the tokenizer and encode a corpus (cached)")
    pr.add_argument("--input", required=True)
    pr.add_argument("--tokenizer", choices=("bpe", "char"), default="bpe")
    pr.add_argument("--vocab-size", type=int, default=None,
                    help=f"BPE vocabulary size (default: the {DEFAULT_PRESET} preset's, so a later `train` finds it "
                         "cached)")
    pr.add_argument("--split-pattern", choices=("gpt4", "gpt2"), default="gpt4")
    pr.add_argument("--replace-errors", action="store_true")
    pr.add_argument("--skip-bad-rows", action="store_true",
                    help="skip (and count) JSON Lines lines or Parquet rows without text instead of stopping")
    pr.add_argument("--text-field", default=None, metavar="FIELD",
                    help="the JSON Lines field or Parquet column holding the text (default: text)")
    pr.add_argument("--workers", type=_worker_count, default=0, metavar="N",
                    help="threads that encode the corpus (default 0: one per core)")

    c = sub.add_parser("corpora", help="list the corpora in inputs/")
    c.add_argument("--json", action="store_true")

    s = sub.add_parser("settings", help="list every setting with its default, range and help")
    s.add_argument("--preset", default=None)

    x = sub.add_parser("export", help="write a run as a folder other tools load (Hugging Face transformers)")
    x.add_argument("run", metavar="RUN", help="run id or unique prefix")
    x.add_argument("--format", default="hf", help="hf: a transformers GPT2LMHeadModel folder (the default)")
    x.add_argument("--out", required=True, metavar="DIR", help="a new or empty folder to write")

    i = sub.add_parser(
        "inspect", help="each token's probability, rank, alternatives and entropy under a run; attention weights",
        description="For each token of the text: the token, its id, its probability given what precedes it, its "
                    "rank among all tokens (1: the likeliest), the --top likeliest alternatives and the entropy of "
                    "the distribution in bits; then the text's bits per byte (the evaluation's definition). A text "
                    "longer than the run's block_size is scored with a sliding window: windows of block_size "
                    "tokens, each half a block past the last, so every token past the first block has at least half "
                    "a block of context. "
                    "--attention L.H prints the attention weights of layer L, head H (from 0; L.mean: the mean "
                    "over the heads; with --json its \"head\" is \"mean\") for a text of at most block_size tokens.")
    i.add_argument("run", metavar="RUN", help="run id or unique prefix")
    isrc = i.add_mutually_exclusive_group(required=True)
    isrc.add_argument("--text", help="the text to inspect")
    isrc.add_argument("--text-file", metavar="FILE", help="a UTF-8 file whose text to inspect")
    i.add_argument("--top", type=int, default=5, metavar="K", help="alternatives shown per token (0-100, default 5)")
    i.add_argument("--attention", metavar="L.H", help="print layer L, head H's attention weights instead")
    i.add_argument("--json", action="store_true",
                   help="one JSON object a line: each token, then a summary (or the attention matrix)")
    i.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))

    w = sub.add_parser("serve", help="serve the TUI to a web browser (textual-serve)")
    w.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    w.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    w.add_argument("--public-url", metavar="URL",
                   help="the address browsers use, when it is not http://HOST:PORT (a proxy, --host 0.0.0.0)")

    # global options work after the subcommand too; SUPPRESS keeps a value given before it
    for command in sub.choices.values():
        command.add_argument("--home", default=argparse.SUPPRESS, help="workspace folder (as before the subcommand)")
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show tracebacks on errors")
    return p


def _worker_count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (one per core) or a number of threads, not {text!r}")
    return n


def _version() -> str:
    from gptui import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from gptui.core.workspace import Workspace

        if args.home is not None and not args.home.strip():
            raise InputError("--home needs a folder")
        workspace = Workspace(args.home)
        if workspace.home.exists() and not workspace.home.is_dir():
            raise InputError(f"--home {workspace.home} is not a folder")
        command = args.command or "tui"
        return COMMANDS[command](args, workspace)
    except GptuiError as exc:
        if args.debug:
            raise
        print(f"gptui: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("gptui: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`gptui generate | head`): stop quietly, as Unix tools do on SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the final flush cannot fail too
        return 128 + 13
    except PermissionError as exc:
        if args.debug:
            raise
        print(f"gptui: error: permission denied: {exc.filename or exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if args.debug:
            raise
        print(f"gptui: error: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # last resort: still one line, never a traceback without --debug
        if args.debug:
            raise
        print(f"gptui: error: {type(exc).__name__}: {exc} (run with --debug for details)", file=sys.stderr)
        return 1


# --- commands ------------------------------------------------------------------------------------------------


def cmd_tui(args, workspace) -> int:
    from gptui.tui.app import run_app

    run_app(workspace)
    return 0


LAUNCH_FLAGS = {"nnodes": "--nnodes", "node_rank": "--node-rank", "master_addr": "--master-addr",
                "master_port": "--master-port", "rdzv_endpoint": "--rdzv-endpoint", "rdzv_timeout": "--rdzv-timeout"}


def train_request(args):
    """The TrainRequest `gptui train`'s flags ask for (gptui.core.launch.worker_argv writes them back)."""
    from gptui.core.request import TrainRequest

    return TrainRequest(
        corpus=args.input, preset=args.preset, sets=tuple(args.sets), max_minutes=args.max_minutes,
        resume=args.resume, init_from=args.init_from, name=args.name, replace_errors=args.replace_errors,
        skip_bad_rows=args.skip_bad_rows, workers=args.workers,
    )


def cmd_train(args, workspace) -> int:
    from gptui.core.request import resolve_request

    given = [flag for key, flag in LAUNCH_FLAGS.items() if getattr(args, key) is not None]
    if given and args.nproc_per_node is None:
        raise InputError(f"{given[0]} needs --nproc-per-node N (processes on this machine)")
    plan = resolve_request(workspace, train_request(args))  # refused in one line, before torch or torchrun
    if args.nproc_per_node is not None:
        return _launch(args, workspace, plan)

    from gptui.core.distributed import launched_by_torchrun
    from gptui.core.launch import print_summary, run_job, train_rank

    if launched_by_torchrun():  # one rank of a job: it ends the process
        train_rank(workspace, plan, lambda: ConsoleProgress(sys.stderr), debug=args.debug)
    progress = ConsoleProgress(sys.stderr)
    result = run_job(plan.job(workspace, on_event=progress), progress)
    print_summary(result)
    return 0


def _launch(args, workspace, plan) -> int:
    """`train --nproc-per-node N ...`: check everything that can be checked here, then start torchrun."""
    from gptui.core.launch import DEFAULT_RDZV_TIMEOUT, LaunchOptions, check_launch, launch, worker_argv

    options = LaunchOptions(
        nproc_per_node=args.nproc_per_node, nnodes=1 if args.nnodes is None else args.nnodes,
        node_rank=0 if args.node_rank is None else args.node_rank, master_addr=args.master_addr,
        master_port=args.master_port, rdzv_endpoint=args.rdzv_endpoint,
        rdzv_timeout=DEFAULT_RDZV_TIMEOUT if args.rdzv_timeout is None else args.rdzv_timeout,
    ).check()
    check_launch(workspace, plan.request)
    worker = worker_argv(workspace, plan.request, debug=args.debug)
    return launch(options, worker, plan.device(workspace), debug=args.debug)


class ConsoleProgress:
    """Turns training events into a progress bar on a terminal, or plain lines in a pipe or log."""

    def __init__(self, stream):
        self.stream = stream
        self.tty = stream.isatty()
        self.last_plain = 0.0
        self.bar_shown = False

    def message(self, text: str) -> None:
        self._clear_bar()
        print(text, file=self.stream, flush=True)

    def _clear_bar(self) -> None:
        if self.bar_shown:
            self.stream.write("\r\x1b[2K")
            self.bar_shown = False

    def __call__(self, e) -> None:
        from gptui.core import events as ev

        if isinstance(e, ev.Prepare):
            if self.tty:  # a transient status line; in a pipe, only results are worth a line
                frac = f" {_bar(e.fraction, 20)} {e.fraction:5.1%}" if e.fraction is not None else "..."
                width = shutil.get_terminal_size().columns - 1  # a wrapped line could not be redrawn in place
                self.stream.write(f"\r\x1b[2K{(e.stage + frac)[:width]}")
                self.stream.flush()
                self.bar_shown = True
        elif isinstance(e, ev.Started):
            s = e.settings
            batch = ""
            if {"batch_size", "block_size", "grad_accum"} <= s.keys():
                tokens = s["batch_size"] * s["block_size"] * s["grad_accum"] * e.world_size
                batch = f", global batch {tokens:,} tokens"
            procs = f" x {e.world_size} processes" if e.world_size > 1 else ""
            self.message(f"run {e.run_id}: {e.params:,} parameters on {e.device} ({e.dtype}){procs}, "
                         f"steps {e.start_step}->{e.max_iters}{batch}; ctrl-c stops and saves")
        elif isinstance(e, ev.Step):
            eta = _hms(e.eta_seconds) if e.eta_seconds is not None else "?"
            line = (f"step {e.step}/{e.max_iters}  loss {e.loss:.4f}  lr {e.lr:.2e}  "
                    f"{e.tokens_per_sec:,.0f} tok/s  eta {eta}")
            if self.tty:
                self.stream.write(f"\r\x1b[2K{_bar(e.step / e.max_iters, 24)} {line}")
                self.stream.flush()
                self.bar_shown = True
            elif time.time() - self.last_plain >= 10:
                self.last_plain = time.time()
                self.message(line)
        elif isinstance(e, ev.Eval):
            self.message(f"step {e.step}: train {e.train_loss:.4f}  val {e.val_loss:.4f}  "
                         f"val bpb {e.val_bpb:.4f}{'  (best)' if e.best else ''}")
        elif isinstance(e, ev.Sample):
            self.message(f"--- sample at step {e.step} ---\n{e.text.strip()}\n---")
        elif isinstance(e, ev.Log) and e.line.startswith(("tokenizer", "data:", "torch.compile", "resum",
                                                          "fine-tuning", "repaired")):
            self.message(e.line)
        elif isinstance(e, ev.Finished) and e.status != "failed":  # failures are main()'s one line
            self.message(f"{e.status}: {e.reason}")

    def close(self) -> None:
        self._clear_bar()
        self.stream.flush()


def _bar(fraction: float, width: int) -> str:
    filled = int(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def _hms(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _text_or_file(text: str | None, path: str | None, what: str) -> str | None:
    """The text given on the command line, or the UTF-8 contents of the file named instead (one-line error)."""
    if not path:
        return text
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None


def cmd_generate(args, workspace) -> int:
    from gptui.core.runs import RunStore
    from gptui.core.sampling import check_num_samples

    check_num_samples(args.num_samples)
    store = RunStore(workspace)
    prompt = _text_or_file(args.prompt, args.prompt_file, "prompt file")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError("the prompt is not valid UTF-8 text") from None
    if args.run:
        run = store.resolve(args.run)
    else:
        run = store.newest()
        if run is None:
            raise InputError(f"no trained runs in {store.root}; train one first (gptui train --input NAME)")

    if args.save and (problem := run.generations_problem()):
        raise GptuiError(problem)
    from gptui.core.generate import DecodeStats, load_model, stream_samples
    from gptui.core.sampling import SamplingSettings, save_transcript, unescape

    settings = SamplingSettings(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        seed=args.seed, stop=unescape(args.stop),
    )
    settings.check()
    n = args.num_samples
    loaded = load_model(run, args.device, args.dtype)
    out = sys.stdout
    texts = [""] * n
    # the first sample streams as it decodes; the others (decoded in the same batch) follow it
    out.write(_sample_heading(1, n) + prompt)
    out.flush()
    stats = DecodeStats()
    for k, piece in stream_samples(loaded, prompt, settings, n, stats=stats):
        texts[k] += piece
        if k == 0:
            out.write(piece)
            out.flush()
    out.write("\n")
    for k in range(1, n):
        out.write(_sample_heading(k + 1, n) + prompt + texts[k] + "\n")
    out.flush()
    print(f"{stats.tokens:,} tokens in {stats.seconds:.2f} s: {stats.describe(loaded)}", file=sys.stderr)
    if args.save:
        body = "\n".join(_sample_heading(k + 1, n) + prompt + text for k, text in enumerate(texts))
        extra = {"dtype": loaded.dtype} | ({"num_samples": str(n)} if n > 1 else {})
        path = save_transcript(run, settings, prompt, body, "generation", **extra)
        print(f"saved {path}", file=sys.stderr)
    return 0


def _sample_heading(k: int, n: int) -> str:
    return f"--- sample {k} ---\n" if n > 1 else ""


def cmd_runs(args, workspace) -> int:
    from gptui.core.runs import RunStore

    infos = RunStore(workspace).list()
    if args.json:
        keys = ("id", "corpus", "params", "tokenizer", "steps", "best_val_loss", "val_bpb", "status", "created",
                "duration", "damaged", "world_size")
        print(json.dumps([{k: i.as_dict()[k] for k in keys} for i in infos], indent=2))
        return 0
    if not infos:
        print(f"no runs in {workspace.models}")
        return 0
    rows = [("RUN", "CORPUS", "PARAMS", "TOKENIZER", "STEPS", "VAL LOSS", "VAL BPB", "STATUS", "CREATED",
             "DURATION")]
    from gptui.core.runs import human_count

    for i in infos:
        rows.append((
            i.id, i.corpus, human_count(i.params) if i.params else "?", i.tokenizer, str(i.steps),
            f"{i.best_val_loss:.4f}" if i.best_val_loss is not None else "-",
            f"{i.val_bpb:.4f}" if i.val_bpb is not None else "-",
            i.status + (f" ({i.damaged})" if i.damaged else ""), i.created.replace("T", " ")[:16],
            _hms(i.duration),
        ))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0


def cmd_prepare(args, workspace) -> int:
    from gptui.core.config import SETTINGS_BY_NAME, preset_config
    from gptui.core.data import TokenizerSpec, prepare

    workspace.ensure()
    path = workspace.corpus_path(args.input)
    vocab = args.vocab_size if args.vocab_size is not None else preset_config(DEFAULT_PRESET).vocab_size
    if args.tokenizer == "bpe" and not 257 <= vocab <= 1 << 20:
        raise InputError(f"--vocab-size must be between 257 and {1 << 20}, not {vocab}")
    text_field = SETTINGS_BY_NAME["text_field"].default if args.text_field is None else args.text_field
    if not text_field.strip():
        raise InputError("--text-field needs the name of a field or column")
    spec = TokenizerSpec("char", 0, "") if args.tokenizer == "char" else TokenizerSpec("bpe", vocab, args.split_pattern)
    progress = ConsoleProgress(sys.stderr)
    t0 = time.perf_counter()
    try:
        data = prepare(path, spec, workspace.cache, progress=lambda s, f: progress(_prep_event(s, f)),
                       replace_errors=args.replace_errors, show_progress=sys.stderr.isatty(),
                       text_field=text_field, skip_bad_rows=args.skip_bad_rows, workers=args.workers)
    finally:
        progress.close()
    took = time.perf_counter() - t0
    how = f"cache hit after hashing {data.seconds.get('hash', 0):.2f}s" if data.cached else (
        f"hashing {data.seconds.get('hash', 0):.2f}s, tokenizer {data.seconds['train_tokenizer']:.2f}s, "
        f"encode {data.seconds['encode']:.2f}s")
    skipped = f", {data.skipped_text()}" if data.skipped else ""
    print(f"{path.name}: {data.documents:,} document{'s' if data.documents != 1 else ''}, "
          f"{len(data.tokens):,} tokens, {data.tokenizer.describe()}, "
          f"{len(data.tokens) / max(1, data.corpus_bytes):.3f} tokens/byte{skipped}; {took:.2f}s ({how})")
    return 0


def _prep_event(stage, fraction):
    from gptui.core.events import Prepare

    return Prepare(stage, fraction)


def cmd_corpora(args, workspace) -> int:
    from gptui.core.corpus import KIND_NAMES

    workspace.ensure()
    infos = workspace.corpora()
    if args.json:
        print(json.dumps([{"name": c.name, "file": c.file_name, "kind": c.kind, "bytes": c.bytes,
                           "documents": c.documents, "files": c.files, "chars": c.chars, "lines": c.lines,
                           "error": c.error} for c in infos], indent=2))
        return 0
    for c in infos:
        documents = "?" if c.documents is None else f"{c.documents:,}"
        note = f"  ({c.error})" if c.error else ""
        print(f"{c.name:<30} {KIND_NAMES.get(c.kind, c.kind):<16} {c.bytes:>15,} bytes  {documents:>10} documents"
              f"  {c.files:>7,} files{note}")
    return 0


def cmd_settings(args, workspace) -> int:
    from gptui.core.config import GROUPS, SETTINGS, ConfigError, preset_config

    try:
        config = preset_config(args.preset or "tiny")
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    for group, title in GROUPS.items():
        print(f"{title}:")
        for s in SETTINGS:
            if s.group == group:
                print(f"  {s.name:<16} {str(getattr(config, s.name)):<10} {s.range_text:<22} {s.help}")
    return 0


def cmd_export(args, workspace) -> int:
    from gptui.core.export import FORMATS, export_run, exported_class
    from gptui.core.runs import RunStore

    if args.format not in FORMATS:
        raise InputError(f"unknown export format {args.format!r} (choose {', '.join(FORMATS)})")
    if not args.out.strip():
        raise InputError("--out needs a folder")
    run = RunStore(workspace).resolve(args.run)
    path = export_run(run, Path(args.out), args.format)
    print(f"exported run {run.id} to {path}: {FORMATS[args.format]} ({exported_class(path)})")
    return 0


def cmd_inspect(args, workspace) -> int:
    from gptui.core.runs import RunStore

    text = _text_or_file(args.text, args.text_file, "text file")
    if not text:
        raise InputError("the text is empty: give some text to inspect")
    run = RunStore(workspace).resolve(args.run)

    from gptui.core import inspect
    from gptui.core.generate import load_model

    inspect.check_top(args.top)
    loaded = load_model(run, args.device, "float32")  # float32: the trained model's exact probabilities
    model, tok = loaded.model, loaded.tokenizer
    if args.attention is not None:
        layer, head = inspect.parse_head(args.attention, model.config.n_layer, model.config.n_head)
        attention = inspect.attention_text(model, tok, text, layer)
        matrix = attention.head(head)
        if args.json:
            print(json.dumps({"layer": layer, "head": "mean" if head is None else head, "tokens": attention.tokens,
                              "weights": matrix}, ensure_ascii=False))
        else:
            print(f"attention of layer {layer}, {'the mean over the heads' if head is None else f'head {head}'} "
                  f"(row: the query token; columns: the keys it attends to)")
            print(_attention_table(attention.tokens, matrix))
        return 0
    scores = inspect.score_text(model, tok, text, args.top)
    if args.json:
        for token in scores.tokens:
            print(json.dumps(token.as_dict(), ensure_ascii=False))
        print(json.dumps(scores.summary()))
        return 0
    print(_scores_table(scores))
    return 0


def _shown(token: str, width: int = 0) -> str:
    """A token quoted, with whitespace and control characters escaped, so its boundaries are visible."""
    shown = json.dumps(token, ensure_ascii=False)
    return shown[: width - 1] + "…" if width and len(shown) > width else shown


def _scores_table(scores) -> str:
    lines = [f"{'#':>5}  {'token':<12} {'id':>6} {'p':>8} {'rank':>6} {'entropy':>8}  likeliest instead"]
    for n, t in enumerate(scores.tokens):
        p = f"{t.p:8.4f}" if t.p is not None else f"{'—':>8}"
        rank = f"{t.rank:6,}" if t.rank is not None else f"{'—':>6}"
        entropy = f"{t.entropy:8.3f}" if t.entropy is not None else f"{'—':>8}"
        top = "  ".join(f"{_shown(s, 12)} {q:.3f}" for s, q in t.top)
        lines.append(f"{n:>5}  {_shown(t.token, 12):<12} {t.id:>6} {p} {rank} {entropy}  {top}".rstrip())
    bpb = scores.bits_per_byte
    window = (f"; scored with a sliding window of {scores.window} tokens moving {scores.stride} at a time"
              if scores.stride else "")
    lines.append(f"{len(scores.tokens):,} tokens, {scores.scored_bytes:,} bytes scored (all but the first token): "
                 + (f"{bpb:.4f} bits per byte" if bpb is not None else "no bits per byte (one token)") + window)
    return "\n".join(lines)


def _attention_table(tokens: list[str], matrix: list[list[float]]) -> str:
    labels = [_shown(t, 8) for t in tokens]
    width = max(len(label) for label in labels)
    lines = [" " * (width + 1) + " ".join(f"{label:>8}" for label in labels)]
    for label, row in zip(labels, matrix, strict=True):
        lines.append(f"{label:>{width}} " + " ".join(f"{w:8.4f}" for w in row))
    return "\n".join(lines)


def cmd_serve(args, workspace) -> int:
    """The TUI over this workspace in a browser: textual-serve starts `gptui --home HOME` for each page opened."""
    import asyncio
    import shlex

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, not {args.port}")
    _check_port_free(args.host, args.port)
    try:
        from textual_serve.server import Server
    except ImportError:
        raise GptuiError("gptui serve needs the textual-serve package (pip install textual-serve)") from None
    workspace.ensure()
    command = [sys.executable, "-m", "gptui", "--home", str(workspace.home)] + (["--debug"] if args.debug else [])

    sessions: set[asyncio.Task] = set()

    class GptuiServer(Server):
        async def on_startup(self, app) -> None:  # one line instead of textual-serve's banner
            print(f"serving gptui ({workspace.home}) at {self.public_url}; ctrl-c stops", flush=True)

        async def handle_websocket(self, request):
            task = asyncio.current_task()
            sessions.add(task)
            try:
                return await super().handle_websocket(request)
            finally:
                sessions.discard(task)

        async def on_shutdown(self, app) -> None:
            # ctrl-c: end the open pages now, each app told to quit (else the server waits them out, 20 s here)
            for task in list(sessions):
                task.cancel()
            if sessions:
                await asyncio.wait(list(sessions), timeout=10)

    server = GptuiServer(shlex.join(command), host=args.host, port=args.port, title="gptui",
                         public_url=_public_url(args.host, args.port, args.public_url))
    try:
        server.serve()  # (its debug mode would have each app look for Textual's devtools)
    except OSError as exc:  # taken between the check and the start
        raise InputError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return 0


def _public_url(host: str, port: int, given: str | None) -> str:
    """The address the page tells the browser to connect back to. A wildcard host (all interfaces) is no address
    a browser can reach, so this machine's name stands in for it."""
    if given:
        return given.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        import socket

        host = socket.gethostname()
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _check_port_free(host: str, port: int) -> None:
    """Bind every address `host` names, as the server will, so a busy port is one line before anything starts."""
    import errno
    import socket

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise InputError(f"--host {host!r} is not an address to listen on ({getattr(exc, 'strerror', exc)})") from None
    bound = 0
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
                bound += 1
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise InputError(f"port {port} on {host} is busy (another program listens there); "
                                     f"pick another with --port") from None
                if exc.errno == errno.EACCES:
                    raise InputError(f"port {port} needs administrator rights; pick one above 1023 with --port") from None
                if exc.errno != errno.EADDRNOTAVAIL:  # a family this machine lacks: the server skips it too
                    raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    if not bound:
        raise InputError(f"--host {host} is not an address of this machine")


COMMANDS = {
    "tui": cmd_tui, "train": cmd_train, "generate": cmd_generate, "runs": cmd_runs, "prepare": cmd_prepare,
    "corpora": cmd_corpora, "settings": cmd_settings, "export": cmd_export, "serve": cmd_serve,
    "inspect": cmd_inspect,
}

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
