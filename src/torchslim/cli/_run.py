"""The one path every transforming command takes: plan a recipe, run it, save the artifact, show it.

``prune``, ``distill``, ``compress``, ``quantize``, ``export`` and ``run`` only build their
configs; :func:`run_command` does the rest the same way for all of them, so every command writes
the recipe it executed (``--dry-run`` prints it without running), appends its step when given an
artifact, checks ``--out`` before any work, and prints one JSON shape in one set of units.
"""

from __future__ import annotations

from typing import Any

import typer

from torchslim.errors import TorchslimError

__all__ = ["DRY_RUN_OPTION", "FORCE_OPTION", "TRUST_CODE_OPTION", "run_command"]

FORCE_OPTION = typer.Option(
    False, "--force", help="Replace an existing non-empty --out directory (atomically, at the end)."
)
DRY_RUN_OPTION = typer.Option(
    False, "--dry-run", help="Print the recipe this command would run (recipe.yaml) and exit."
)
TRUST_CODE_OPTION = typer.Option(
    False,
    "--trust-code",
    help="Let an artifact rebuild an architecture it names outside torchslim's registries "
    "(runs that code: only for artifacts you made).",
)
TRUST_PICKLE_OPTION = typer.Option(
    False,
    "--trust-pickle",
    help="Allow unpickling a full module (runs code from the file: only for files you created).",
)
NO_VERIFY_OPTION = typer.Option(
    False, "--no-verify", help="Load an artifact without checking its file hashes (unsafe)."
)


_SAFE_PREFIXES = ("torchslim:", "torchvision:", "timm:", "hf:", "synthetic:")


def names_code(source: str | None) -> bool:
    """True when a model/data source string would import and call Python code
    (``pkg.module:factory``), as opposed to a file, a directory or a registry source."""
    import re
    from pathlib import Path

    if not source or source.startswith(_SAFE_PREFIXES):
        return False
    base = source.split("?", 1)[0]
    return bool(re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", base)) and not Path(base).exists()


def refuse_named_code(named: dict[str, str | None], where: str, trust_code: bool) -> None:
    """Refuse sources that a file (a recipe, an artifact) names and that would run code, unless
    the user passed ``--trust-code``. Sources the user typed on the command line are theirs."""
    if trust_code:
        return
    for option, source in named.items():
        if names_code(source):
            raise TorchslimError(
                f"{where} names --{option} '{source}', which would import and run that code.",
                f"Pass --trust-code only if you trust where it came from, or give --{option} "
                "yourself.",
            )


def _default_split(src: str | None) -> str | None:
    """Bundled data sets default to their training split for calibration and training."""
    if src and src.startswith("torchslim:") and "split=" not in src:
        return "train"
    return None


def _with_default_data(p: Any) -> Any:
    """``p``'s recipe with the model's bundled calib/eval data where a new step needs them.

    A reference model names its bundled data in ``metadata["default_calib"]`` and
    ``["default_eval"]``; a step that needs calibration data (static quantization) or evaluation
    data (``max_drop``) and was given none uses them, said in one line on stderr. Without such
    data, an accuracy budget is refused.
    """
    from torchslim.passes.base import PASSES

    data, meta = p.recipe.data, p.original.metadata
    done = len(p.start.recipe.steps) if p.start is not None else 0
    need: dict[str, bool] = {"calib": False, "eval": False}
    for step in p.recipe.steps[done:]:
        try:
            needs = set(PASSES.by_key(type(step).__name__).needs)
            if type(step).__name__ == "QuantizeConfig":
                from torchslim.passes.quantize import quant_entry

                needs |= set(quant_entry(step).needs)
        except TorchslimError:
            needs = set()  # an unknown step or method is reported when the recipe runs
        need["calib"] |= "calibration_data" in needs
        need["eval"] |= "evaluation_data" in needs or getattr(step, "max_drop", None) is not None
    used = {
        k: meta[f"default_{k}"]
        for k, needed in need.items()
        if needed and getattr(data, k) is None and meta.get(f"default_{k}")
    }
    if used:
        typer.echo(
            f"Using {p.original.source}'s bundled data: "
            + ", ".join(f"--{k} {v}" for k, v in used.items()),
            err=True,
        )
    if need["eval"] and data.eval is None and "eval" not in used:
        raise TorchslimError(
            "An accuracy budget (--max-drop) needs evaluation data.",
            "Give --eval DATA (e.g. torchslim:fashion_mnist), or drop --max-drop.",
        )
    return p.recipe.with_data(**used)


def run_command(
    model: str,
    steps: tuple[Any, ...] = (),
    runtime: Any = None,
    *,
    recipe: Any = None,
    calib: str | None = None,
    eval_src: str | None = None,
    train: str | None = None,
    teacher: str | None = None,
    out: str | None = None,
    force: bool = False,
    arch: str | None = None,
    input_shape: str | None = None,
    trust_pickle: bool = False,
    trust_code: bool = False,
    verify: bool = True,
    measure: bool = True,
    batch_sizes: tuple[int, ...] | None = None,
    seed: int | None = None,
    threads: int | None = None,
    max_drop: float | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    title: str = "",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Plan, run, check, save and print one command; returns the JSON summary it printed.

    Args:
        model: The model source (an artifact directory continues that artifact's recipe).
        steps: Pass configs to append.
        runtime: Runtime config (``None``: eager, or the artifact's when no step is added).
        recipe: A whole :class:`~torchslim.recipe.Recipe` to run instead (``torchslim run``).
        calib: Calibration data source.
        eval_src: Evaluation data source.
        train: Training data source.
        teacher: Teacher model source (distillation).
        out: Artifact directory (nothing is saved without it).
        force: Replace an existing ``out``.
        arch: Architecture for weights-only checkpoints.
        input_shape: Input spec text.
        trust_pickle: Allow full unpickling of the model file.
        trust_code: Allow an artifact's named architecture outside torchslim's registries.
        verify: Check an artifact's file hashes first (``False`` only with ``--no-verify``).
        measure: Measure latency (interleaved with the original).
        batch_sizes: Batch sizes to build, check and measure for.
        seed: Seed.
        threads: Intra-op threads.
        max_drop: Accuracy budget in points; exceeding it is an error (exit 2, nothing saved).
        dry_run: Print the recipe and stop.
        as_json: Print one JSON object.
        title: Heading for the human-readable table.
        extra: More keys for the JSON summary (e.g. how ``--runtime auto`` chose).

    Raises:
        TorchslimError: Any problem, with a one-line message and a hint.
    """
    from torchslim._io import check_out_dir
    from torchslim.cli._common import emit_json, stderr_console, stdout_console
    from torchslim.data import load_data
    from torchslim.models import load_model
    from torchslim.pipeline import RunData, plan, run_recipe
    from torchslim.recipe import DataRefs

    # --threads/--batch-size/--max-drop were checked by cli._common.check_options already.
    if out is not None:
        check_out_dir(out, force=force, inputs=(model, calib, eval_src, train, teacher))
    err = stderr_console()
    loaded = load_model(
        model,
        arch=arch,
        input_spec=input_shape,
        trust_pickle=trust_pickle,
        trust_code=trust_code,
        verify=verify,
    )
    refs = DataRefs(calib=calib, eval=eval_src, train=train, teacher=teacher)
    if recipe is not None:
        from dataclasses import replace

        full = recipe.with_data(
            **{k: getattr(refs, k) for k in ("calib", "eval", "train", "teacher")}
        )
        if batch_sizes:
            full = replace(full, batch_sizes=tuple(batch_sizes))
        if seed is not None:
            full = replace(full, seed=seed)
        from torchslim.pipeline import Plan

        art = loaded.metadata.get("artifact")
        if art is None:
            p = Plan(full, loaded, None)
        else:  # continue the artifact: its steps must be the recipe's first steps
            done = tuple(art.recipe.steps)
            if tuple(full.steps[: len(done)]) != done:
                raise TorchslimError(
                    f"The recipe does not continue artifact '{model}' (its steps differ).",
                    "Give the original model (the artifact's source) instead.",
                )
            p = plan(
                loaded,
                tuple(full.steps[len(done) :]),
                full.runtime,
                batch_sizes=full.batch_sizes,
                data=full.data,
                seed=full.seed,
                trust_code=trust_code,
            )
    else:
        p = plan(
            loaded,
            tuple(steps),
            runtime,
            batch_sizes=batch_sizes,
            data=refs,
            seed=seed,
            trust_code=trust_code,
        )
    p.recipe = _with_default_data(p)
    p.recipe.validate()
    if dry_run:
        if as_json:
            emit_json({"recipe": p.recipe.to_dict(), "steps": p.recipe.describe()})
        else:
            typer.echo(p.recipe.to_yaml(), nl=False)
        return {"recipe": p.recipe.to_dict()}
    spec = p.original.input_spec or loaded.input_spec
    refs = p.recipe.data  # the command's data, else what the artifact's recipe used
    if p.start is not None:  # sources the artifact's recipe names, not the user
        given = {"calib": calib, "eval": eval_src, "train": train, "teacher": teacher}
        refuse_named_code(
            {k: getattr(refs, k) for k, v in given.items() if v is None},
            f"Artifact '{model}'",
            trust_code,
        )
    data = RunData(
        calib=load_data(refs.calib, input_spec=spec, split=_default_split(refs.calib))
        if refs.calib
        else None,
        eval=load_data(refs.eval, input_spec=spec) if refs.eval else None,
        train=load_data(refs.train, input_spec=spec, split=_default_split(refs.train))
        if refs.train
        else None,
        teacher=load_model(refs.teacher, input_spec=spec).require_module()
        if refs.teacher
        else None,
    )
    with err.status(f"{title or 'Running'} …") as status:
        cand = run_recipe(
            p.recipe,
            p.original,
            data=data,
            input_spec=spec,
            measure=measure,
            threads=threads,
            progress=lambda msg: status.update(f"{msg} …"),
            raise_errors=True,
            start=p.start,
        )
    drop = cand.drop_points
    if max_drop is not None and drop is not None and drop > max_drop:
        from torchslim.errors import AccuracyBudgetError

        raise AccuracyBudgetError(
            f"The result dropped {drop:.2f} accuracy points, over the budget of {max_drop:g}; "
            "nothing was saved.",
            "Raise --max-drop, or try another method/backend.",
            best=cand.to_dict(),
        )
    if out is not None:
        from torchslim.artifact import save_artifact

        err.print(f"Saving the artifact to {out}")
        save_artifact(cand, out, force=force, source=p.original.source)
    from torchslim.artifact import deployment_files

    files = [p.relative_to(cand.built.files).as_posix() for p in deployment_files(cand.built.files)]
    summary = {"model": model, "artifact": out, "files": files, **cand.to_dict(), **(extra or {})}
    from torchslim._json import to_jsonable

    deployed = getattr(cand.built, "deployed", None)
    summary["runtime_info"] = to_jsonable(dict(getattr(deployed, "info", None) or {}))
    summary.setdefault("warnings", [])
    reps, agree = summary.get("reports") or [], (summary.get("fidelity") or {}).get("agreement")
    if (  # pruned, nothing retrained it, and it no longer predicts like the original
        any(r.get("pass") == "prune" for r in reps)
        and not any("recovery" in r or "train" in r for r in reps)
        and agree is not None
        and agree < 0.5
    ):
        msg = (
            f"the pruned model agrees with the original on only {agree:.0%} of top-1 predictions "
            "and no recovery training ran; add --recover kd --data TRAIN to win accuracy back."
        )
        summary["warnings"].append(msg)
        typer.echo(f"warning: {msg}", err=True)
    if as_json:
        emit_json(summary)
    else:
        print_candidate(summary, title or model, stdout_console())
    return summary


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else fmt.format(v)


def print_candidate(s: dict[str, Any], title: str, console: Any) -> None:
    """A table of a candidate's numbers against its baseline, then its steps and notes."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("", "original", "result", "change"):
        table.add_column(col, justify="right" if col else "left")
    if not s.get("fidelity_only"):
        table.add_row(
            f"accuracy ({s.get('metric') or 'top1'})",
            _f(s.get("baseline_accuracy"), "{:.2%}"),
            _f(s.get("accuracy"), "{:.2%}"),
            _f(-(s.get("drop_points") or 0.0), "{:+.2f} pts"),
        )
    if s.get("params") is not None and s.get("baseline_params"):
        table.add_row(
            "parameters",
            f"{s['baseline_params']:,}",
            f"{s['params']:,}",
            f"{s['baseline_params'] / max(s['params'], 1):.2f}× fewer",
        )
    if s.get("flops") and s.get("baseline_flops"):
        table.add_row(
            "FLOPs / item",
            f"{s['baseline_flops'] / 1e6:,.1f} M",
            f"{s['flops'] / 1e6:,.1f} M",
            f"{s['baseline_flops'] / s['flops']:.2f}× fewer",
        )
    base, mine = s.get("baseline_size_mb"), s.get("size_mb")
    table.add_row(
        "size (MB)",
        _f(base, "{:.3f}"),
        _f(mine, "{:.3f}"),
        f"{base / mine:.2f}× smaller" if base and mine else "",
    )
    for b, sp in (s.get("speedup") or {}).items():
        lo, hi = sp["ci95"]
        table.add_row(
            f"latency p50, batch {b} (ms)",
            _f(sp["baseline_ms"], "{:.3f}"),
            _f(sp["candidate_ms"], "{:.3f}"),
            f"{sp['ratio']:.2f}× [{lo:.2f}–{hi:.2f}]",
        )
    console.print(table)
    fid = s.get("fidelity") or {}
    if fid:
        console.print(
            f"fidelity vs original: agreement {fid['agreement']:.2%}, cosine {fid['cosine']:.5f}, "
            f"max abs error {fid['max_abs_error']:.4g}"
            + (" (fidelity only: no labelled eval data)" if s.get("fidelity_only") else "")
        )
    if s.get("parity"):
        console.print(
            f"parity passed for the {s['runtime']} runtime ({s['parity']['precision']} tolerance)"
        )
    if s.get("files"):
        console.print(f"deployment files: {', '.join(s['files'])} ({s.get('size_mb') or 0:.3f} MB)")
    ri = s.get("runtime_info") or {}
    if "planned_memory_mb" in ri:  # executorch: program, arena, what XNNPACK did not take
        fb = ri.get("fallback_ops") or []
        console.print(
            f"ExecuTorch program {ri['program_mb']:.3f} MB, planned memory "
            f"{ri['planned_memory_mb']:.3f} MB, {ri['delegated_op_count']} operators in "
            f"{ri['delegated_subgraphs']} XNNPACK subgraph(s), {ri['fallback_op_count']} on "
            "portable kernels"
        )
        for f in fb:
            console.print(
                f"  portable: {f['op']} ×{f['count']} in {', '.join(f['modules']) or '?'}: "
                f"{f['reason']}"
            )
    if s.get("teacher_accuracy") is not None:
        console.print(f"teacher accuracy {s['teacher_accuracy']:.2%}")
    console.print("recipe: " + " → ".join(s.get("steps", [])))
    for rep in s.get("reports", []):
        for key in ("speedup_note", "note", "warning", "recovery_note"):
            if rep.get(key):
                console.print(f"note: {rep[key]}")
        if rep.get("float_layers"):
            console.print(f"kept in float: {', '.join(map(str, rep['float_layers']))}")
    if s.get("artifact"):
        console.print(
            f"saved to {s['artifact']} (load it: torchslim.load_artifact({s['artifact']!r}); "
            f"replay: torchslim run {s['artifact']}/recipe.yaml MODEL)"
        )
