"""The commands the Snakemake rules call: ``python -m pipeline_src <command> ...``.

Every rule runs exactly one of these, passing paths; each can be run by hand the same way.
Imports are lazy so ``--help`` is instant.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _registry_entry(registry: str, dataset: str) -> dict:
    from .config import ConfigError, load_registry

    reg = load_registry(registry)
    if dataset not in reg:
        raise ConfigError(f"{registry}: no dataset named {dataset!r} (known: {', '.join(sorted(reg))})")
    return reg[dataset]


def cmd_download(a: argparse.Namespace) -> None:
    from .config import load_config
    from .data.download import fetch_dataset, mirror_dirs

    cfg = load_config(a.config)
    entry = _registry_entry(a.registry or cfg["registry"], a.dataset)
    mirrors = mirror_dirs(a.mirror or cfg["data"]["mirrors"])
    fetch_dataset(a.dataset, entry, Path(a.out), mirrors,
                  timeout=cfg["data"]["download_timeout_s"], retries=cfg["data"]["download_retries"])


def cmd_prepare(a: argparse.Namespace) -> None:
    from .data.prepare import prepare_dataset

    entry = _registry_entry(a.registry, a.dataset)
    prepare_dataset(a.dataset, entry, Path(a.raw), Path(a.out), threads=a.threads)


def cmd_split(a: argparse.Namespace) -> None:
    from .data.splits import parse_split_name, write_split

    entry = _registry_entry(a.registry, a.dataset)
    fractions = tuple(entry.get("split", {}).get("fractions", (0.8, 0.1, 0.1)))
    named = [(out, parse_split_name(Path(out).name.removesuffix(".parquet"))) for out in a.out]  # all names first
    for out, spec in named:
        write_split(Path(a.processed), spec.kind, spec.seed, Path(out), fractions=fractions, fold=spec.fold,
                    cv_folds=a.cv_folds, valid_fraction=a.cv_valid_fraction)
        print(f"{a.dataset}: wrote {out}", flush=True)


# Training commands hold one GPU slot each (pipeline_src/train/slots.py), taken before CUDA starts.

def cmd_pretrain(a: argparse.Namespace) -> None:
    from .train.slots import job_slot

    with job_slot(a.device):
        from .config import load_config
        from .spec import resolve_pretrain
        from .train.pretrain import CorpusReadError, run_pretrain

        job = resolve_pretrain(load_config(a.config), a.corpus, a.method)   # the config, resolved once
        try:
            run_pretrain(job, a.processed, a.out, seed=a.seed, threads=a.threads, device=a.device)
        except CorpusReadError as e:
            raise SystemExit(f"input error: {e}") from e


def cmd_evaluate(a: argparse.Namespace) -> None:
    import contextlib

    from .train.slots import job_slot

    # the encoder runs on the device for finetune and for the linear protocol's features; the
    # classical baselines run on the CPU
    with job_slot(a.device) if a.protocol != "classical" else contextlib.nullcontext():
        from .config import load_config, load_registry
        from .evaluate.run import run_evaluate
        from .spec import resolve_evaluate

        cfg = load_config(a.config)
        job = resolve_evaluate(cfg, load_registry(cfg["registry"]), a.dataset, a.method, a.protocol)  # resolved once
        run_evaluate(job, a.processed, a.out,
                     features=a.features, model=a.model, device=a.device, threads=a.threads)


def cmd_masks(a: argparse.Namespace) -> None:
    import torch

    from .train.masks import write_masks

    torch.set_num_threads(max(1, a.threads))
    print(f"masks {a.corpus}: {write_masks(a.model, a.processed, a.corpus, a.out)}")


def cmd_dvc_stages(a: argparse.Namespace) -> None:
    from .atomic import write_bytes_atomic
    from .stages import load_run_config, stages_text

    cfg, registry, run_config = load_run_config(a.params)
    write_bytes_atomic(a.out, stages_text(cfg, registry, run_config).encode())
    print(f"{a.out}: the DVC stages of {run_config}")


def cmd_dvc_plan(a: argparse.Namespace) -> None:
    from .stages import check_stages_file, load_run_config, write_specs

    cfg, registry, run_config = load_run_config(a.params)
    check_stages_file(a.stages, cfg, registry, run_config)
    print(f"{a.out}: {write_specs(cfg, registry, a.out)} stage specs of {run_config}")


def cmd_targets(a: argparse.Namespace) -> None:
    from .stages import load_run_config, targets

    cfg, registry, _ = load_run_config(a.params)
    print("\n".join(targets(cfg, registry, corpus=a.corpus, dataset=a.dataset, method=a.method)))


def cmd_method_check(a: argparse.Namespace) -> None:
    from .methods.conformance import main as check_main

    code = check_main(a.name, steps=a.steps, force_permutation=a.force_permutation)
    if code:
        raise SystemExit(code)


def cmd_method_code(a: argparse.Namespace) -> None:
    from .stages import write_method_code

    code = write_method_code(a.name, a.out)
    print(f"{a.out}: {code['distribution']} {code['version']}, {len(code['files'])} files")


def cmd_method_list(a: argparse.Namespace) -> None:
    from .methods.registry import available_methods

    for name, entry in sorted(available_methods().items()):
        print(f"{name:<12} {entry.value}  ({entry.dist} {entry.version or ''})".rstrip())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipeline_src", description="maskbench pipeline steps (each Snakemake rule calls one)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("download", help="fetch a dataset's raw files from the mirrors or upstream URLs (sha256-verified)")
    s.add_argument("--config", default="config/config.yaml")
    s.add_argument("--registry", help="dataset registry (default: the config's 'registry')")
    s.add_argument("--dataset", required=True)
    s.add_argument("--out", required=True, help="folder for the raw files, e.g. data/raw/<dataset>")
    s.add_argument("--mirror", action="append", help="mirror directory (repeatable; default: the config's data.mirrors)")
    s.set_defaults(func=cmd_download)

    s = sub.add_parser("prepare", help="raw files -> table.parquet (or shards/) + qc.json")
    s.add_argument("--registry", default="config/datasets.yaml")
    s.add_argument("--dataset", required=True)
    s.add_argument("--raw", required=True, help="folder with the raw files")
    s.add_argument("--out", required=True, help="processed folder, e.g. data/processed/<dataset>")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_prepare)

    s = sub.add_parser("split", help="write splits (id, fold) of a prepared dataset, one file per split name")
    s.add_argument("--registry", default="config/datasets.yaml")
    s.add_argument("--dataset", required=True)
    s.add_argument("--processed", required=True)
    s.add_argument("--out", required=True, nargs="+",
                   help="split files named by their split: .../scaffold.parquet, .../scaffold_balanced_seed1.parquet, "
                        ".../scaffold_cv_r0_f3.parquet, ...")
    s.add_argument("--cv-folds", type=int, default=5, help="scaffold_cv: folds per repeat (the config's scaffold_cv.folds)")
    s.add_argument("--cv-valid-fraction", type=float, default=0.1,
                   help="scaffold_cv: share of all molecules carved from the training folds as valid")
    s.set_defaults(func=cmd_split)

    s = sub.add_parser("pretrain", help="pretrain one method on one corpus -> model.pt + log.jsonl (resumable)")
    s.add_argument("--config", default="config/config.yaml")
    s.add_argument("--corpus", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--processed", required=True, help="the corpus's processed folder")
    s.add_argument("--out", required=True, help="checkpoint folder, e.g. data/checkpoints/<corpus>/<method>")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=None)
    s.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: $MASKBENCH_DEVICE, else cuda if present)")
    s.set_defaults(func=cmd_pretrain)

    s = sub.add_parser("evaluate", help="(dataset, method, protocol) results, one JSON per split and seed")
    s.add_argument("--config", default="config/config.yaml")
    s.add_argument("--dataset", required=True)
    s.add_argument("--method", required=True)
    s.add_argument("--protocol", required=True, choices=["linear", "finetune", "classical"])
    s.add_argument("--processed", required=True, help="the task's processed folder (with splits/)")
    s.add_argument("--out", required=True, nargs="+",
                   help="result files .../<split>/seed<k>.json: each names the split and the seed of one run")
    s.add_argument("--features", nargs="+", help="linear: where the frozen features are written, one .../seed<k>.npz per seed")
    s.add_argument("--model", nargs="+", help="linear, finetune: the checkpoints, one .../seed<k>/model.pt per pretraining seed")
    s.add_argument("--device", default=None)
    s.add_argument("--threads", type=int, default=None)
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("dataset", help="manage the dataset registry: 'dataset add NAME --file ...' writes a new entry")
    dsub = s.add_subparsers(dest="dataset_command", required=True, metavar="SUBCOMMAND")
    from .data.add import add_arguments as dataset_add_arguments, main_from_args as dataset_add_main

    s = dsub.add_parser("add", help="read a data file, infer its layout, check it as prepare will, and append its "
                                    "registry entry (or print it with --dry-run)")
    dataset_add_arguments(s)
    s.set_defaults(func=dataset_add_main)

    s = sub.add_parser("method", help="pretraining methods: 'method list' (installed), 'method check NAME' (conformance)")
    msub = s.add_subparsers(dest="method_command", required=True, metavar="SUBCOMMAND")
    s = msub.add_parser("list", help="the installed methods: built-ins and entry points of the group maskbench.methods")
    s.set_defaults(func=cmd_method_list)
    s = msub.add_parser("check", help="run a method on each domain's shape, seconds on the CPU: finite loss, gradients, "
                                      "mask ratio, every draw from the generator, masked_loss, and SMA eq. 1's "
                                      "permutation property if it claims domain_agnostic; non-zero exit on a failure")
    s.add_argument("name", help="the method's config name (its entry point's name)")
    s.add_argument("--steps", type=int, default=3, help="optimizer steps per check")
    s.add_argument("--force-permutation", action="store_true",
                   help="run the permutation check even if the class says domain_agnostic = False")
    s.set_defaults(func=cmd_method_check)
    s = msub.add_parser("code", help="a method's code identity (distribution, version, sha256 of its module files) "
                                     "-> JSON (the DVC method_code stage)")
    s.add_argument("name")
    s.add_argument("--out", required=True, help="data/method_code/<name>.json")
    s.set_defaults(func=cmd_method_code)

    s = sub.add_parser("masks", help="SMA masks drawn from one checkpoint -> data/masks/<corpus>/<method>.json (report figures)")
    s.add_argument("--model", required=True, help="a model.pt of an SMA-style method (sma, sma_r2)")
    s.add_argument("--processed", required=True, help="the corpus's processed folder")
    s.add_argument("--corpus", required=True)
    s.add_argument("--out", required=True, help="data/masks/<corpus>/<method>.json")
    s.add_argument("--threads", type=int, default=1)
    s.set_defaults(func=cmd_masks)

    from .report.build import add_arguments as report_arguments, main_from_args as report_main

    s = sub.add_parser("report", help="results, checkpoints and benchmarks -> reports/all.md (+ tables/, figures/)")
    report_arguments(s)
    s.set_defaults(func=report_main)

    from .report.metrics import add_arguments as metrics_arguments, main_from_args as metrics_main

    s = sub.add_parser("metrics", help="results + pretraining logs -> reports/metrics.json and DVC loss plots (CSV)")
    metrics_arguments(s)
    s.set_defaults(func=metrics_main)

    from .report.provenance import add_arguments as provenance_arguments, main_from_args as provenance_main

    s = sub.add_parser("dvc-stages", help="params.yaml's run_config -> dvc_stages.yaml (the foreach lists of dvc.yaml)")
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--out", default="dvc_stages.yaml")
    s.set_defaults(func=cmd_dvc_stages)

    s = sub.add_parser("dvc-plan", help="one spec per DVC stage (its settings and the sha256 of the code it reads) -> data/plan/")
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--stages", default="dvc_stages.yaml", help="checked against the run config first")
    s.add_argument("--out", default="data/plan")
    s.set_defaults(func=cmd_dvc_plan)

    s = sub.add_parser("targets", help="the Snakemake targets of one DVC stage, one per line")
    s.add_argument("--params", default="params.yaml")
    s.add_argument("--method", required=True)
    g = s.add_mutually_exclusive_group(required=True)
    g.add_argument("--corpus", help="a pretraining stage: the (corpus, method)'s checkpoints")
    g.add_argument("--dataset", help="an evaluation stage: the (task, method)'s results")
    s.set_defaults(func=cmd_targets)

    s = sub.add_parser("provenance", help="software versions, git commit, effective config, hardware -> reports/pipeline_info/")
    provenance_arguments(s)
    s.set_defaults(func=provenance_main)
    return p


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError
    from .data.add import AddError
    from .data.splits import SplitError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except SplitError as e:
        print(f"split error: {e}", file=sys.stderr)
        return 2
    except AddError as e:
        print(f"dataset add: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from .data.download import DownloadError

        if isinstance(e, DownloadError):
            print(f"download error: {e}", file=sys.stderr)
            return 3
        raise
    return 0
