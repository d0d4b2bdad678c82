"""What an experiment reports: `results.json` (every run; per variant the mean and spread over seeds; every
difference between modes beside the noise floor) and the model card `README.md` with its two plots.

The card opens with Hugging Face Hub metadata (YAML front matter: library, base model when fine-tuned from a
Hub id, datasets, tags, a `model-index` with each variant's validation and test perplexity), then the seed
table (final training loss, perplexities, peak memory, time, epochs, seeds). Times and throughput ratios
measured on a CPU or a loaded machine (load average above the CPU count) carry a caveat: they are noisy, the
memory figures are exact byte counts.

The noise floor of a variant is the sample standard deviation of its metric over seeds (the
same variant trained again with another seed). A difference between two modes is shown with
the larger floor of the two; it is called within the noise when its size does not exceed that
floor. With one seed there is no floor (null), and the card says so.

The card's two figures, as PNG bytes: training loss curves, and peak memory per variant.

Drawn on a bare matplotlib `Figure` with the Agg canvas (no pyplot, no global backend).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
import transformers

from bwsk.atomic import write_atomic
from bwsk.render.figures import new_figure, png_bytes
from bwsk.render.units import MIB, human_bytes
from bwsk.training.trainer.run_folder import METRICS_FILE, RUN_FILE, RunResult, read_metrics, summarize

RESULTS_JSON = "results.json"
CARD = "README.md"
LOSS_PLOT = "loss_curves.png"
MEMORY_PLOT = "peak_memory.png"
RESULTS_FORMAT = 1
METRICS = ("valid_perplexity", "test_perplexity")
SUMMARIZED = (*METRICS, "final_train_loss", "tokens_per_s", "wall_seconds")  # what a seed summary summarises, with epochs
TASK = "text-generation"


def experiment_results(
    *,
    model: str,
    variants: list,
    runs: dict[str, list[tuple[str, RunResult]]],
    out: Path,
    seeds: int,
    first_seed: int,
    published: dict[str, list[str]],
    base_model: str | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """The content of results.json for finished `runs`: per variant folder, (run folder relative to `out`, result) in seed order.

    `published`: per variant folder, the files of its publishable folder (the first seed's model); `base_model`: the Hub
    id the fine-tune variants start from (None: not a Hub id, or no fine-tune); `dataset`: the data's Hub id (None: local).
    """
    first = runs[variants[0].folder][0][1]
    resolved = json.loads((out / runs[variants[0].folder][0][0] / RUN_FILE).read_text())["resolved"]
    shared = {key: value for key, value in resolved.items() if key not in ("mode", "seed", "kernels")}
    reversible = [runs[variant.folder][0][1] for variant in variants if variant.mode == "reversible"]
    if reversible:  # the seams of the reversible variants (the other modes have none)
        shared["kernels"] = reversible[0].config["kernels"]
    rows = [_variant_row(variant, runs[variant.folder], published[variant.folder]) for variant in variants]
    machine = _machine()
    return {
        "format": RESULTS_FORMAT,
        "model": model,
        "base_model": base_model,
        "dataset": dataset,
        "data": first.data,
        "tokens": first.tokens,
        "perplexity_method": first.perplexity_method,
        "config": shared,
        "seeds": list(range(first_seed, first_seed + seeds)),
        "device": first.device,
        "machine": machine,
        "timing_caveat": timing_caveat({run.device for found in runs.values() for _, run in found}, machine),
        "software": {"torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()},
        "noise_floor_rule": "sample standard deviation over seeds of one variant; a difference is within the noise when |difference| <= the larger floor of the two variants",
        "variants": rows,
        "comparisons": _comparisons(rows),
    }


def _machine() -> dict[str, Any]:
    """The CPUs and the load averages (1, 5, 15 min) as the experiment ends (None where the system has none)."""
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "load_average": load}


def timing_caveat(devices: set[str], machine: dict[str, Any]) -> str | None:
    """Why the times and throughput ratios are noisy (None when measured on accelerators of a machine that was not loaded)."""
    reasons = []
    if any("cpu (" in device for device in devices):  # "cpu (N threads)", "2 x cpu (1 threads), ddp over gloo"
        reasons.append("on a CPU")
    load, cpus = machine["load_average"], machine["cpus"]
    if load and cpus and max(load) > cpus:
        reasons.append(f"on a loaded machine (load average up to {max(load):.1f} on {cpus} CPUs)")
    if not reasons:
        return None
    return (
        f"Times and throughput ratios were measured {' and '.join(reasons)}: they are noisy, compare them only roughly; "
        "the peak memory figures are exact byte counts and repeat run to run."
    )


def run_epochs(result: RunResult) -> float:
    """Passes over the train split: optimizer steps over the steps of one epoch (blocks of seq_len per global batch)."""
    config = result.config
    per_epoch = (result.tokens["train"] // config["seq_len"]) // (config["batch_size"] * result.world_size)
    return result.steps / per_epoch


def _variant_row(variant, results: list[tuple[str, RunResult]], files: list[str]) -> dict[str, Any]:
    runs = [
        {
            "seed": result.seed,
            "folder": folder,
            "final_train_loss": result.final_train_loss,
            "valid_perplexity": result.valid_perplexity,
            "test_perplexity": result.test_perplexity,
            "peak_memory_bytes": result.peak_memory_bytes,
            "tokens_per_s": result.tokens_per_s,
            "wall_seconds": result.wall_seconds,
            "steps": result.steps,
            "epochs": run_epochs(result),
            "device": result.device,
            "best_valid_step": result.best_valid_step,
            "stopped": result.stopped,
            "drift": result.drift,
            "conversion": result.conversion,
            "analyzed_plan": result.analyzed_plan,
        }
        for folder, result in results
    ]
    summary = seed_summary([result for _, result in results])
    return {
        "variant": variant.folder,
        "experiment": variant.experiment,
        "published": {"folder": variant.folder, "seed": results[0][1].seed, "files": files},
        "runs": runs,
        **summary,
        "peak_memory_source": results[0][1].peak_memory_source,
    }


def seed_summary(results: list[RunResult]) -> dict[str, Any]:
    """Mean, sample spread, min, max and count over the seeds of one variant, per quantity in `SUMMARIZED` and of the
    epochs (`run_epochs`); peak memory over the seeds that measured it (None when none did)."""
    summary: dict[str, Any] = {"seeds": [r.seed for r in results], "mode": results[0].mode}
    summary |= {name: summarize([getattr(r, name) for r in results]) for name in SUMMARIZED}
    summary["epochs"] = summarize([run_epochs(r) for r in results])
    memory = [float(r.peak_memory_bytes) for r in results if r.peak_memory_bytes is not None]
    summary["peak_memory_bytes"] = summarize(memory) if memory else None
    return summary


def _floor(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """The larger seed spread of two summaries (None when either has one seed)."""
    if a["n"] < 2 or b["n"] < 2:
        return None
    return max(a["std"], b["std"])


def _comparisons(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each non-baseline mode of an experiment against its baseline (conventional, else the first mode)."""
    found = []
    experiments = dict.fromkeys(row["experiment"] for row in rows)
    for experiment in experiments:
        mine = [row for row in rows if row["experiment"] == experiment]
        baseline = next((row for row in mine if row["mode"] == "conventional"), mine[0])
        for row in mine:
            if row is baseline:
                continue
            entry: dict[str, Any] = {"experiment": experiment, "variant": row["variant"], "baseline": baseline["variant"]}
            for metric in METRICS:
                difference = row[metric]["mean"] - baseline[metric]["mean"]
                floor = _floor(row[metric], baseline[metric])
                paired = [r[metric] - b[metric] for r, b in zip(row["runs"], baseline["runs"])]
                entry[metric] = {
                    "difference": difference,
                    "noise_floor": floor,
                    "within_noise": None if floor is None else abs(difference) <= floor,
                    "paired_by_seed": paired,
                }
            if row["peak_memory_bytes"] and baseline["peak_memory_bytes"]:
                entry["peak_memory_ratio"] = row["peak_memory_bytes"]["mean"] / baseline["peak_memory_bytes"]["mean"]
            entry["tokens_per_s_ratio"] = row["tokens_per_s"]["mean"] / baseline["tokens_per_s"]["mean"]
            found.append(entry)
    return found


def write_experiment_outputs(out: Path, summary: dict[str, Any]) -> None:
    """Write the plots, the model card and (last) results.json into `out`, each atomically (replacing any: the caller
    checked `out` before the runs)."""
    curves: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for row in summary["variants"]:
        curves.setdefault(row["experiment"], {})[row["variant"]] = [_curve(out / run["folder"], run["seed"]) for run in row["runs"]]
    write_atomic(str(out / LOSS_PLOT), loss_curves_png(curves), force=True)
    memory = {row["variant"]: row["peak_memory_bytes"]["mean"] for row in summary["variants"] if row["peak_memory_bytes"]}
    if memory:
        write_atomic(str(out / MEMORY_PLOT), peak_memory_png(memory), force=True)
    write_atomic(str(out / CARD), model_card(summary, plots=bool(memory)), force=True)
    write_atomic(str(out / RESULTS_JSON), json.dumps(summary, indent=2, allow_nan=False) + "\n", force=True)


def _curve(folder: Path, seed: int) -> dict[str, Any]:
    records = read_metrics(folder / METRICS_FILE)
    steps = [r for r in records if "loss" in r and "split" not in r]
    valid = [r for r in records if r.get("split") == "valid"]
    return {
        "seed": seed,
        "steps": [r["step"] for r in steps],
        "losses": [r["loss"] for r in steps],
        "valid_steps": [r["step"] for r in valid],
        "valid_losses": [r["nll"] for r in valid],
    }


def model_card(summary: dict[str, Any], *, plots: bool = True) -> str:
    """The README.md of an experiment folder: a Hugging Face model card, its YAML front matter first."""
    rows = summary["variants"]
    seeds = summary["seeds"]
    reversible = [row for row in rows if row["mode"] == "reversible"]
    lines = [
        *_front_matter(summary),
        "",
        f"# bwsk training experiment: {summary['model']}",
        "",
        f"{len(rows)} variants x {len(seeds)} seed(s) ({', '.join(map(str, seeds))}), trained with `bwsk-train experiment`.",
        "",
        f"- **Data:** {summary['data']}",
        "- **Tokens:** " + ", ".join(f"{name} {count:,}" for name, count in summary["tokens"].items()),
        f"- **Perplexity:** {summary['perplexity_method']}",
        f"- **Device:** {summary['device']}; torch {summary['software']['torch']}, transformers {summary['software']['transformers']}",
        f"- **Peak memory:** {rows[0]['peak_memory_source']}",
        *_analyzed_line(rows),
        *_lm_eval_line(summary.get("lm_eval")),
        "",
        "## Files",
        "",
        f"Each variant folder (`{rows[0]['variant']}/`, ...) holds what one uploads: the model of seed {seeds[0]} (weights,",
        "`config.json`, `generation_config.json`, the tokenizer with its eos/bos/pad tokens, `training_results.json`).",
        "`runs/VARIANT/seed-S/` holds every run's working folder (checkpoints, `metrics.jsonl`, `run.json`, its model), and",
        "`runs/VARIANT/seeds.json` the spread over seeds: the working data, not for upload.",
        "",
        "## Results",
        "",
    ]
    lines += _table(
        ["variant", "mode", "seeds", "final train loss", "valid ppl", "test ppl", "peak memory", "time", "epochs"],
        [
            [
                f"`{row['variant']}`",
                row["mode"],
                str(row["test_perplexity"]["n"]),
                _spread(row["final_train_loss"]),
                _spread(row["valid_perplexity"]),
                _spread(row["test_perplexity"]),
                human_bytes(row["peak_memory_bytes"]["mean"]) if row["peak_memory_bytes"] else "n/a",
                _duration(row["wall_seconds"]["mean"]),
                f"{row['epochs']['mean']:.2f}",
            ]
            for row in rows
        ],
    )
    lines.append("")
    if len(seeds) < 2:
        lines.append("One seed: there is no noise floor (the spread over seeds), so no difference can be told apart from noise.")
    else:
        lines.append(
            f"Mean ± sample standard deviation over the {len(seeds)} seeds (the ± is the noise floor: the same variant trained "
            "with another seed); time and epochs are means."
        )
    lines += ["", "## Differences between modes, beside the noise floor", ""]
    if summary["comparisons"]:
        lines += _table(
            [
                "variant",
                "vs",
                "Δ valid ppl",
                "Δ test ppl",
                "noise floor (valid / test)",
                "within noise?",
                "memory ratio",
                "throughput ratio",
            ],
            [_comparison_cells(entry) for entry in summary["comparisons"]],
        )
    else:
        lines.append("Only one mode per experiment: nothing to compare.")
    if summary["timing_caveat"]:
        lines += ["", f"**Caveat:** {summary['timing_caveat']}"]
    if plots:
        lines += ["", "## Plots", "", f"![training and validation loss]({LOSS_PLOT})", "", f"![peak memory per variant]({MEMORY_PLOT})"]
    lines += ["", "## Configuration", "", "Shared by every run (the mode and the seed vary):", "", "```json"]
    lines += [json.dumps(summary["config"], indent=2), "```", "", *_loading(rows[0]["variant"], reversible)]
    return "\n".join(lines)


def _analyzed_line(rows: list[dict[str, Any]]) -> list[str]:
    """The card's line for the analyzed variants: the budget they trained under and the byte target it meant (none
    without them; every analyzed run of an experiment has the same config and shape, so the same plan)."""
    plans = [run["analyzed_plan"] for row in rows if row["mode"] == "analyzed" for run in row["runs"] if run.get("analyzed_plan")]
    if not plans:
        return []
    plan = plans[0]
    return [
        f"- **Analyzed mode:** budget {plan['budget_means']}, a target of {human_bytes(plan['target_bytes'])} of activations per "
        f"training batch (predicted at the training precision: {human_bytes(plan['predicted_bytes'])} stored, floor {human_bytes(plan['floor_bytes'])}; "
        f"{plan['recompute_flops']:.3g} FLOPs recomputed per step)"
    ]


def _lm_eval_line(found: dict[str, Any] | None) -> list[str]:
    """The card's line for `bwsk-train experiment --eval lm-eval` (none without it)."""
    if found is None:
        return []
    numbers = ", ".join(f"`{name}` {row['token_perplexity']:.3f}" for name, row in found["variants"].items())
    worst = max(row["relative_difference"] for row in found["variants"].values())
    return [
        f"- **lm-eval** ({found['tool']}, task `{found['task']}` in `{found['task_folder']}/`; {found['windows']}): token perplexity "
        f"{numbers}; bwsk's scorer predicts each within {worst:.1e} (relative). The test ppl below uses the trainer's strided windows."
    ]


def _loading(example: str, reversible: list[dict[str, Any]]) -> list[str]:
    """The card's Loading section: the Auto classes, and for reversible variants what they need."""
    lines = ["## Loading", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer"]
    if reversible:
        lines += ["import bwsk", "", "bwsk.register()  # the bwsk_reversible model type (reversible variants)"]
    lines += [
        f'model = AutoModelForCausalLM.from_pretrained("PATH/TO/THIS/FOLDER", subfolder="{example}")',
        f'tokenizer = AutoTokenizer.from_pretrained("PATH/TO/THIS/FOLDER", subfolder="{example}")',
        "```",
        "",
    ]
    if reversible:
        code = sorted({name for row in reversible for name in row["published"]["files"] if name.endswith(".py")})
        remote = (
            f"; without bwsk, `trust_remote_code=True` loads it with the folder's own code ({', '.join(f'`{name}`' for name in code)})"
            if code
            else ""
        )
        lines += [
            "The reversible variants are the `bwsk_reversible` model type: the base architecture with its layers run as",
            "reversible coupling blocks (a different function from the base model, trained as such); `config.json`",
            f"holds the base config and the coupling layout. With bwsk installed it loads after `bwsk.register()`{remote}.",
            "",
        ]
    return lines


def _front_matter(summary: dict[str, Any]) -> list[str]:
    """Hub metadata as YAML (every string double-quoted as JSON, numbers with a decimal point: what YAML 1.1 and 1.2 agree on)."""
    rows = summary["variants"]
    data, dataset_type = _yaml_text(summary["data"]), _yaml_text(summary["dataset"] or "local")
    tags = ["bwsk", "activation-memory", *(["reversible"] if any(row["mode"] == "reversible" for row in rows) else [])]
    title = _yaml_text("bwsk experiment: " + summary["model"])
    lines = ["---", "library_name: transformers", f"pipeline_tag: {TASK}"]
    if summary["base_model"]:
        lines.append(f"base_model: {_yaml_text(summary['base_model'])}")
    lines += ["datasets:", f"- {_yaml_text(summary['dataset'] or summary['data'])}", "tags:", *(f"- {tag}" for tag in tags)]
    lines += ["model-index:", f"- name: {title}", "  results:"]
    for row in rows:
        lines += ["  - task:", f"      type: {TASK}", "      name: Text Generation", "    dataset:", f"      name: {data}"]
        lines += [f"      type: {dataset_type}", "    metrics:"]
        for metric, split in (("valid_perplexity", "validation"), ("test_perplexity", "test")):
            count = row[metric]["n"]
            name = f"{row['variant']}: {split} perplexity (mean of {count} seed{'s' if count > 1 else ''})"
            lines += ["    - type: perplexity", f"      name: {_yaml_text(name)}", f"      value: {row[metric]['mean']:.4f}"]
    return [*lines, "---"]


def _yaml_text(text: str) -> str:
    """`text` as a YAML double-quoted scalar (JSON string syntax, which YAML reads the same)."""
    return json.dumps(text)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _spread(summary: dict[str, Any]) -> str:
    return f"{summary['mean']:.3f}" if summary["n"] < 2 else f"{summary['mean']:.3f} ± {summary['std']:.3f}"


def _comparison_cells(entry: dict[str, Any]) -> list[str]:
    valid, test = entry["valid_perplexity"], entry["test_perplexity"]

    def floor(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    verdicts = {None: "n/a", True: "yes", False: "no"}
    memory = entry.get("peak_memory_ratio")
    return [
        f"`{entry['variant']}`",
        f"`{entry['baseline']}`",
        f"{valid['difference']:+.3f}",
        f"{test['difference']:+.3f}",
        f"{floor(valid['noise_floor'])} / {floor(test['noise_floor'])}",
        f"{verdicts[valid['within_noise']]} / {verdicts[test['within_noise']]}",
        "n/a" if memory is None else f"{memory:.3f}",
        f"{entry['tokens_per_s_ratio']:.3f}",
    ]


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table (cells must not contain '|')."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


LINE_STYLES = ("-", "--", ":", "-.")


def loss_curves_png(curves: dict[str, dict[str, list[dict[str, Any]]]]) -> bytes:
    """Training loss against step, one panel per experiment: per variant the mean over seeds (line) and their range (band).

    `curves[experiment][variant]` lists runs as {"seed", "steps", "losses", "valid_steps", "valid_losses"}; steps
    every seed reached are drawn. Line styles differ so that variants computing the same function stay visible.
    """
    figure, grid = new_figure(1, len(curves), (6.5 * len(curves), 4.2))
    axes = grid[0]
    for axis, (experiment, variants) in zip(axes, curves.items()):
        for index, (variant, runs) in enumerate(variants.items()):
            colour, style = f"C{index % 10}", LINE_STYLES[index % len(LINE_STYLES)]
            steps, mean, low, high = _across_seeds([(run["steps"], run["losses"]) for run in runs])
            axis.plot(steps, mean, color=colour, linestyle=style, linewidth=1.4, label=f"{variant} ({len(runs)} seeds)")
            if len(runs) > 1:
                axis.fill_between(steps, low, high, color=colour, alpha=0.15, linewidth=0)
            valid_steps, valid_mean, _, _ = _across_seeds([(run["valid_steps"], run["valid_losses"]) for run in runs])
            axis.plot(valid_steps, valid_mean, "o", color=colour, markersize=5, markerfacecolor="none")
        axis.set_title(f"{experiment}: training loss (mean over seeds, band: range), validation loss (circles)", fontsize="medium")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss (nats per token)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    return png_bytes(figure, dpi=110)


def _across_seeds(series: list[tuple[list[int], list[float]]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps every series has, mean, min, max at each of them)."""
    shared = sorted(set.intersection(*(set(steps) for steps, _ in series)))
    values = [[dict(zip(steps, losses))[step] for steps, losses in series] for step in shared]
    return shared, [sum(v) / len(v) for v in values], [min(v) for v in values], [max(v) for v in values]


def peak_memory_png(memory: dict[str, float]) -> bytes:
    """Horizontal bars: mean peak memory of each variant's training step, in MiB."""
    names = list(memory)
    figure, grid = new_figure(1, 1, (7, 0.5 * len(names) + 1.4))
    axis = grid[0][0]
    values = [memory[name] / MIB for name in names]
    bars = axis.barh(names, values, color=[f"C{i % 10}" for i in range(len(names))])
    axis.bar_label(bars, labels=[f"{v:,.1f}" for v in values], padding=3, fontsize="small")
    axis.invert_yaxis()
    axis.set_xlabel("peak memory of a training step (MiB)")
    axis.set_xlim(0, max(values, default=1) * 1.2 or 1)
    axis.grid(axis="x", alpha=0.3)
    return png_bytes(figure, dpi=110)
