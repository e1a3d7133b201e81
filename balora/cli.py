"""`balora` command line: a thin layer over the Python API.

Every user error surfaces as one line `balora: error: ...` and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import NoReturn

from balora import method_registry
from balora.config import COMMON, DEFAULTS, SECTIONS, RunConfig, method_settings, plugin_options
from balora.errors import BaloraError, output_folder

# The original BA-LoRA script's flag names, accepted as aliases of ours.
ORIGINAL_FLAGS = {
    "method": ["--peft_method"],
    "budget": ["--param_budget"],
    "base_rank": ["--ba_lora_base_rank"],
    "gradient_samples": ["--ba_lora_gradient_samples"],
    "batch_size": ["--batch_size"],
    "learning_rate": ["--learning_rate"],
}
DEFAULT_DB = "results/balora.db"


class _Parser(argparse.ArgumentParser):
    """argparse, reporting a usage error like every other error: one line, exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"balora: error: {message} (see '{self.prog} --help')\n")


def _finite(kind: type) -> Callable[[str], float | int]:
    """A number flag's type: `kind`, and finite (float('nan') and float('inf') parse, but mean nothing)."""
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        return value
    return parse


# The run options' groups in `--help`, one per section of the nested configuration (balora.config.SECTIONS).
SECTION_HELP = {
    "method": "The method and its options (in a spec: method: {name: ba_lora, strategy: top_k}); each option is read "
              "only by the methods it names.",
    "task": "The task and its options (in a spec: task: {name: causal_lm, prompt_template: chat}).",
    "base_transform": "What is done to the frozen base model: quantisation and its options (in a spec: "
                      "base_transform: {quant: nf4, quant_group_size: 64}).",
}


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """One option per RunConfig field, with the field's help text, grouped by section; defaults stay in RunConfig."""
    by_name = {f.name: f for f in [*fields(RunConfig), *plugin_options().values()]}
    readers = method_settings()
    common = parser.add_argument_group("run options", "Common to every method, task and base model.")
    for name in COMMON:
        _add_option(common, by_name[name])
    for section_name, section in SECTIONS.items():
        group = parser.add_argument_group(f"{section_name} options", SECTION_HELP[section_name])
        for name in ((section.selector,) if section.selector else ()) + section.names:
            read_by = f" Read by {', '.join(readers[name])}." if name in readers else ""
            _add_option(group, by_name[name], read_by)
    # The original script's switch, the same as --warmstart.
    parser.add_argument("--ba_lora_use_warmstart", dest="warmstart", action="store_true", default=argparse.SUPPRESS)
    parser.add_argument("--experiment_name", default=None, help="The original script's run name: the output folder under runs/.")


def _add_option(group: argparse._ArgumentGroup, f: Field, read_by: str = "") -> None:
    flags = [f"--{f.name.replace('_', '-')}"] + ORIGINAL_FLAGS.get(f.name, [])
    kind = f.type.replace(" | None", "")
    options: dict = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata.get("help", "") + read_by}
    if kind == "bool":
        options["action"] = argparse.BooleanOptionalAction
    elif kind == "list[str]":
        options["nargs"] = "+"
    else:
        options["type"] = {"int": _finite(int), "float": _finite(float), "str": str}[kind]
        default = f.default if f.default is not MISSING else None
        options["metavar"] = f.name.upper() if default is None else f"{f.name.upper()}={default}"
    group.add_argument(*flags, **options)


def _run_config(args: argparse.Namespace) -> RunConfig:
    from balora.tasks import with_task_defaults  # imports transformers: after silence()

    names = {*DEFAULTS, *plugin_options()}
    return with_task_defaults(RunConfig.from_dict({k: v for k, v in vars(args).items() if k in names}))


def cmd_allocate(args: argparse.Namespace) -> None:
    from balora.allocation import describe, summary, table, total_params
    from balora.run import plan_allocation

    config = _run_config(args)
    setup, prepared = plan_allocation(config)
    rows = prepared.allocation
    lora = total_params(rows)
    # what the adapter trains besides A and B: DoRA's magnitude vectors, AdaLoRA's singular values
    extra = prepared.extra_params + prepared.per_rank_extra * sum(r.rank for r in rows)
    payload = {"budget": setup.budget, "total_params": lora, "extra_params": extra, "head_params": setup.head_params,
               "rank_equivalent": lora / sum(t.cost_per_rank for t in setup.targets),
               "summary": summary(rows), "modules": [r.to_dict() for r in rows]}
    if args.json:
        print(json.dumps(payload, indent=2))
        return
    print(table(rows))
    what = method_registry.get(config.method).extra_params or "the method"  # what the adapter trains besides them
    besides = (f"; {extra:,} more besides A and B ({what}), "
               f"{lora + extra:,} in all" if extra else "")
    print(f"LoRA parameters: {lora:,} of a {setup.budget:,} budget (rank-equivalent {payload['rank_equivalent']:.2f})"
          f"{besides}; head parameters (trained, {'counted' if config.count_head else 'not counted'}): "
          f"{setup.head_params:,}")
    print(describe(rows))


def cmd_train(args: argparse.Namespace) -> None:
    from balora.run import run_experiment

    config = _run_config(args)
    out = output_folder(args.out or Path("runs") / (args.experiment_name or f"{config.method}-{config.key()}"), "--out")
    result = run_experiment(config, out, progress=not args.quiet).result
    if os.environ.get("RANK", "0") != "0":  # under torchrun only the first process reports
        return
    from balora import tasks

    p = result["params"]
    head = f"  head params {p['head']:,}" if p["head"] else ""  # a causal LM trains no head
    print(f"{config.method}: {tasks.get(result['task']).headline(result['metrics'])}  LoRA params {p['lora']:,}{head}  "
          f"time {result['timings']['total']:.1f}s")
    print(f"wrote {out / 'result.json'} and {out / 'adapter'}")


def cmd_merge(args: argparse.Namespace) -> None:
    from balora.base_transform import merge_run

    memory = merge_run(args.run, args.out)
    print(f"merged into {memory['modules']} group-quantised layers: {memory['stored_bytes']:,} bytes stored "
          f"against {memory['fp32_bytes']:,} in fp32 ({memory['ratio']:.2f}x smaller); wrote {args.out}")


def cmd_sweep(args: argparse.Namespace) -> None:
    from balora import specs, sweeps

    spec = specs.preset_for_legacy_flags(args) or args.spec
    if spec is None:
        raise BaloraError("name a sweep: a YAML file or a preset (" + ", ".join(specs.PRESETS) + ")")
    sweeps.run_sweep(specs.load_spec(spec, args.only), db=args.db, runs_dir=args.runs_dir, dry_run=args.dry_run,
                     workers=args.workers, backend=args.backend, ray_address=args.ray_address,
                     rerun_failed=args.rerun_failed, results_dir=args.results_dir)


def cmd_runs(args: argparse.Namespace) -> None:
    from balora import sweeps

    print(sweeps.runs_table(args.db, args.sweep, args.status))


def cmd_export(args: argparse.Namespace) -> None:
    from balora.store import ResultsStore

    with ResultsStore(args.db, create=False) as store:
        print(f"wrote {store.export(args.format, args.out or f'results/runs.{args.format}')}")


def cmd_import(args: argparse.Namespace) -> None:
    from balora.runfiles import read_runs
    from balora.store import ResultsStore

    runs = read_runs(args.folder)  # all read and checked before the database changes
    with ResultsStore(args.db) as store:
        for result in runs:
            store.add(result, args.sweep or str(result.get("sweep") or ""))
    print(f"imported {len(runs)} runs from {args.folder} into {args.db}")


def cmd_report(args: argparse.Namespace) -> None:
    from balora.specs import given_spec, load_spec

    # a preset's declarations are found by the runs' sweep name; a user's spec is given here
    with given_spec(load_spec(args.spec) if args.spec else None):
        _report(args)


def _report(args: argparse.Namespace) -> None:
    from balora.report import build_paper, check_report, write_report, write_runs_report
    from balora.report.paper import is_source

    # a run folder the paper does not report (results/probe, a user's) leaves the paper's inputs alone
    paper_dir = args.paper_dir or (None if args.runs and not is_source(args.runs) else "paper")
    if args.check:
        if not args.runs:
            raise BaloraError("--check compares a committed report with its run files: give --runs DIR")
        check_report(args.runs, args.out or report_dir(args.runs), args.readme)
        also = f" (and so does {args.readme}'s block)" if args.readme else ""
        print(f"{args.out or report_dir(args.runs)} matches the report rebuilt from {args.runs}{also}")
        return
    if args.runs:
        written = write_runs_report(args.runs, args.out or report_dir(args.runs), paper_dir=paper_dir,
                                    readme=args.readme)
    else:
        if args.readme:
            raise BaloraError("--readme writes a results folder's headline block: give --runs DIR")
        written = write_report(args.db, args.out or "report", paper_dir=paper_dir)
    print(f"wrote {written}")
    if args.paper:
        print(f"wrote {build_paper(paper_dir or 'paper')}")


def report_dir(runs: str) -> str:
    """Where the report of a run folder goes by default: next to the runs, so it is committed with them."""
    return str(Path(runs) / "report")


def cmd_run(args: argparse.Namespace) -> None:
    """The main job: the `quick` preset, a results table, then the report."""
    from balora import sweeps
    from balora.report import write_report
    from balora.specs import load_spec

    sweeps.run_sweep(load_spec("quick", []), db=args.db, runs_dir=args.runs_dir, workers=args.workers)
    print(sweeps.results_table(args.db, "quick"))
    print(f"report: {write_report(args.db, args.out, paper_dir=args.paper_dir)}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="balora", description="Budget-aware adaptive LoRA on Hugging Face PEFT.")
    sub = parser.add_subparsers(dest="command", required=True)

    allocate = sub.add_parser("allocate", help="importance and rank allocation only, no training")
    _add_run_options(allocate)
    allocate.add_argument("--json", action="store_true", help="print JSON instead of a table")
    allocate.set_defaults(handler=cmd_allocate)

    train = sub.add_parser("train", help="one fine-tuning run: result.json and a PEFT adapter")
    _add_run_options(train)
    train.add_argument("--out", default=None, help="output folder (default runs/METHOD-KEY)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(handler=cmd_train)

    merge = sub.add_parser("merge", help="fold a QA-LoRA run's adapter into its INT4/INT8 zero-points")
    merge.add_argument("run", help="a run folder written by balora train (--quant int4|int8 --qa-lora)")
    merge.add_argument("--out", required=True, help="folder for the merged, still quantised model")
    merge.set_defaults(handler=cmd_merge)

    sweep = sub.add_parser("sweep", help="a grid of runs from a YAML file or a preset, resumable")
    sweep.add_argument("spec", nargs="?", help="YAML file or preset name")
    sweep.add_argument("--only", nargs="+", default=[], metavar="KEY=VALUE", help="keep grid points with these values")
    sweep.add_argument("--dry-run", "--dry_run", action="store_true",
                       help="list the planned tuning and evaluation runs, which are done, and a time estimate")
    sweep.add_argument("--workers", type=_finite(int), default=1, help="parallel worker processes on this machine")
    sweep.add_argument("--backend", choices=["local", "ray"], default="local", help="where runs execute")
    sweep.add_argument("--ray-address", default=None, help="Ray cluster address (default: start a local Ray)")
    sweep.add_argument("--rerun-failed", action="store_true", help="retry runs recorded as failed")
    sweep.add_argument("--runs-dir", default="runs", help="folder for result.json and adapters")
    sweep.add_argument("--results-dir", default=None,
                       help="also write each finished run to DIR/KEY.json, and skip runs whose file exists "
                            "(default: the spec's results_dir, e.g. results/paper for the paper preset)")
    sweep.add_argument("--db", default=DEFAULT_DB, help="results database")
    for flag in ("--run-all", "--run-adalora", "--run-qa-lora"):  # seed 003's runner flags
        sweep.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    sweep.set_defaults(handler=cmd_sweep)

    runs = sub.add_parser("runs", help="list runs and their status")
    runs.add_argument("--db", default=DEFAULT_DB)
    runs.add_argument("--sweep", default=None)
    runs.add_argument("--status", choices=["running", "done", "failed"], default=None)
    runs.set_defaults(handler=cmd_runs)

    export = sub.add_parser("export", help="export the results database")
    export.add_argument("--format", choices=["csv", "json"], default="csv")
    export.add_argument("--db", default=DEFAULT_DB)
    export.add_argument("--out", default=None)
    export.set_defaults(handler=cmd_export)

    importer = sub.add_parser("import", help="import run files (DIR/KEY.json) into a results database")
    importer.add_argument("folder", help="folder of run files, e.g. results/paper")
    importer.add_argument("--db", default=DEFAULT_DB)
    importer.add_argument("--sweep", default=None, help="sweep the runs belong to (default: the one in each file)")
    importer.set_defaults(handler=cmd_import)

    for name, handler, text in (("report", cmd_report, "statistics, figures, tables and the paper's generated parts"),
                                ("run", cmd_run, "the main job: quick preset, results table, report")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--db", default=DEFAULT_DB)
        if name == "run":
            command.add_argument("--paper-dir", default="paper", help="where paper/generated/ is written")
            command.add_argument("--out", default="report")
            command.add_argument("--runs-dir", default="runs")
            command.add_argument("--workers", type=_finite(int), default=1)
        else:
            command.add_argument("--out", default=None, help="report folder (default report/, or DIR/report with --runs)")
            command.add_argument("--runs", default=None, metavar="DIR",
                                 help="build from the run files in DIR (e.g. results/paper) instead of the database")
            command.add_argument("--check", action="store_true",
                                 help="with --runs: check that the report in --out is the one these runs give")
            command.add_argument("--readme", default=None, metavar="PATH",
                                 help="with --runs: also write (with --check: check) PATH's generated block of "
                                      "headline results for DIR, e.g. README.md")
            command.add_argument("--paper", action="store_true", help="also build paper/main.pdf (pdflatex + bibtex)")
            command.add_argument("--paper-dir", default=None,
                                 help="where paper/generated/ is written (default paper/, for the database and the run "
                                      "folders the paper reports, results/paper, results/levers and results/peers; other "
                                      "run folders write none)")
            command.add_argument("--spec", default=None, metavar="FILE",
                                 help="the spec (YAML file) of runs not made by a preset: its equivalence_margin, "
                                      "anytime and hypotheses apply to the runs of the sweep it names")
        command.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2), already printed
        return int(stop.code or 0)
    try:
        from balora.quiet import silence

        silence()
        args.handler(args)
    except (BaloraError, OSError) as err:  # OSError: a path the user gave that cannot be read or written
        print(f"balora: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("balora: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
