"""``import-script``: one original ``run_vqvae.py`` / ``run_transformer.py`` command line -> a recipe.

The script is read as the shell and python-fire would read it (line continuations, quoting, flag
values as Python literals through `ast.literal_eval`, never evaluated as code). Every flag of
reference §1.3/§1.5 is known with its default; an unknown flag stops the conversion with its
name. Each flag becomes a recipe key, or a comment that says why it has none: inert in the
original (§9.4), a launcher/runtime setting, or a setting brainsynth does not offer (also a
warning). Flags the original itself refused are warned about and ignored.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from brainsynth.core.errors import RecipeError
from brainsynth.core.recipe import dump_yaml
from brainsynth.core.schema import did_you_mean

from .original_flags import REJECTED_BY_ORIGINAL, REQUIRED, TRANSFORMER_FLAGS, VQVAE_FLAGS

SCRIPTS = {"run_vqvae.py": VQVAE_FLAGS, "run_transformer.py": TRANSFORMER_FLAGS}


@dataclasses.dataclass
class Conversion:
    """A converted script: the recipe, comments per top-level key, and warnings for the user."""

    script: str
    recipe: dict[str, Any] = dataclasses.field(default_factory=dict)
    notes: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def note(self, section: str, text: str) -> None:
        self.notes.setdefault(section, []).append(text)

    def warn(self, section: str, text: str) -> None:
        self.warnings.append(text)
        self.note(section, f"WARNING: {text}")

    def render(self, source: str) -> str:
        """Commented YAML: a header, then each section preceded by its comments."""
        lines = [
            f"# Converted by 'brainsynth import-script' from {source} ({self.script}).",
            "# Check it with: brainsynth validate RECIPE.yaml",
        ]
        lines += [f"# {text}" for text in self.notes.get("", [])]
        for key, value in self.recipe.items():
            lines.append("")
            lines += [f"# {text}" for text in self.notes.get(key, [])]
            if isinstance(value, (dict, list)):
                lines.append(dump_yaml({key: value}).rstrip("\n"))
            else:  # a lone scalar would come out as a flow mapping, which cannot follow another
                lines.append(yaml.safe_dump({key: value}, default_flow_style=False).rstrip("\n"))
        dropped = self.notes.get("dropped", [])
        if dropped:
            lines += ["", "# Flags with no recipe key:"] + [f"#   {text}" for text in dropped]
        return "\n".join(lines) + "\n"


# -- reading the command line -----------------------------------------------------------------
def fire_value(text: str) -> Any:
    """A flag value as python-fire reads it: a Python literal if it parses as one, else the string.

    The published scripts escape the quotes inside single-quoted tuples (``'(\\"age\\",)'``), which
    the shell keeps; the escapes are dropped, since the tuple is what the scripts mean.
    """
    for candidate in (text, text.replace('\\"', '"').replace("\\'", "'")):
        try:
            return ast.literal_eval(candidate)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
    return text


def parse_command(text: str, source: str) -> tuple[str, dict[str, Any]]:
    """The original script named in `text` and the flags passed to its ``run`` command."""
    joined = re.sub(r"\\\r?\n", " ", text)
    try:
        tokens = shlex.split(joined, comments=True)
    except ValueError as exc:
        raise RecipeError(f"{source}: cannot read the command line ({exc}); check its quotes.") from None
    start = next((i for i, t in enumerate(tokens) if Path(t).name in SCRIPTS), None)
    if start is None:
        raise RecipeError(f"{source}: no 'run_vqvae.py' or 'run_transformer.py' command line found.")
    script, rest = Path(tokens[start]).name, tokens[start + 1 :]
    if rest and rest[0] == "run":
        rest = rest[1:]
    known = SCRIPTS[script]
    flags: dict[str, Any] = {}
    i = 0
    while i < len(rest):
        token = rest[i]
        if token in ("&&", "||", ";", "|"):
            break
        if not token.startswith("--"):
            raise RecipeError(f"{source}: unexpected argument '{token}' (the original's run takes --flag=value only).")
        name, sep, raw = token[2:].partition("=")
        if not sep:
            if i + 1 < len(rest) and not rest[i + 1].startswith("--"):
                raw, i = rest[i + 1], i + 1
            else:
                raw = "True"
        name = name.replace("-", "_")
        value = fire_value(raw)
        if name not in known and name not in REJECTED_BY_ORIGINAL and name.startswith("no") and name[2:] in known:
            name, value = name[2:], False  # python-fire's --noflag
        if name not in known and name not in REJECTED_BY_ORIGINAL:
            raise RecipeError(
                f"{source}: unknown flag --{name} for {script}.{did_you_mean(name, list(known))} "
                f"Every flag of the original's run() is known (reference §1.3/§1.5); remove it or fix its name."
            )
        flags[name] = value
        i += 1
    missing = [name for name, default in known.items() if default is REQUIRED and name not in flags]
    if missing:
        raise RecipeError(f"{source}: the original's {script} requires --{missing[0]}; the script does not pass it.")
    return script, flags


# -- helpers ------------------------------------------------------------------------------------
def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (tuple, list)) else value


def _lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    return value


def _schedule(gamma: Any) -> dict[str, Any]:
    if isinstance(gamma, float):
        return {"name": "exponential", "gamma": gamma}
    return {"name": "exponential", "final_lr": 1.0e-5}  # the original's 'auto': reach 1e-5 at the end


def _root(project_directory: str) -> str:
    return str(project_directory).rstrip("/") or "/"


class _Flags:
    """Flag values (defaults filled in) and which flags the script passed."""

    def __init__(self, known: dict[str, Any], given: dict[str, Any], conversion: Conversion) -> None:
        self.values = {**known, **given}
        self.given = given
        self.known = known
        self.out = conversion

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def is_default(self, name: str) -> bool:
        return self.values[name] == self.known[name]

    def drop(self, name: str, why: str) -> None:
        """A flag with no recipe key: listed (with why) when the script passes it."""
        if name in self.given:
            self.out.note("dropped", f"--{name}={self.given[name]!r}: {why}")

    def inert(self, name: str, why: str = "") -> None:
        self.drop(name, "inert in the original (reference §9.4)" + (f"; {why}" if why else "") + ", dropped")

    def unsupported(self, name: str, section: str, why: str) -> None:
        """A setting brainsynth does not offer: a warning when the value differs from the default."""
        if not self.is_default(name):
            self.out.warn(section, f"--{name}={self.values[name]!r} is not converted: {why}")
        else:
            self.drop(name, "default value; nothing to convert")


_RUNTIME = {
    "device": "GPU choice / 'ddp': launch with torchrun or 'brainsynth run --nproc-per-node N'",
    "distributed_port": "set MASTER_PORT for torchrun",
    "cuda_benchmark": "cudnn autotuning is a runtime choice, not part of the recipe",
    "gradient_as_bucket_view": "DDP internals; brainsynth chooses them",
    "parameters_as_bucket_view": "ZeRO internals; brainsynth chooses them",
    "checkpoint_every": "brainsynth writes last.pt every epoch and best.pt on improvement",
    "log_every": "the original logged to TensorBoard every N epochs; brainsynth logs every train.log_every iterations",
    "eval_batch_size": "brainsynth evaluates one volume at a time",
    "prefetch_factor": "DataLoader internals",
    "outputs_directory": "brainsynth writes outputs inside the run directory",
    "save_2d_images": "brainsynth logs mid-slice images of every evaluation",
    "save_3d_images": "GIF summaries are not written",
    "training_epoch_length": "profiling option",
    "starting_epoch": "resume with 'brainsynth run --resume' (never silently)",
    "evaluation_checkpoint": "outputs.checkpoint / sample.checkpoint choose best or last",
}


def _common(flags: _Flags, task: str, modes: dict[str, str]) -> dict[str, Any]:
    out = flags.out
    mode = flags["mode"]
    if mode not in modes:
        raise RecipeError(f"--mode={mode!r}: the original's {out.script} has modes {', '.join(modes)}.")
    recipe: dict[str, Any] = {"task": task, "mode": modes[mode]}
    recipe["experiment"] = {"name": str(flags["experiment_name"]), "root": _root(flags["project_directory"])}
    out.note("experiment", "The original wrote to <project_directory><experiment_name>/<network>/; brainsynth to <root>/<name>/.")
    if flags["deterministic"]:
        recipe["seed"] = int(flags["seed"])
        out.note("seed", "The original seeded numpy/torch with seed + rank (deterministic=True); brainsynth does the same.")
    else:
        flags.inert("seed", "the original only seeded with --deterministic=True; brainsynth always seeds (seed 0 here)")
    flags.drop("deterministic", "brainsynth always seeds its runs")
    if flags["use_zero"]:
        recipe["zero"] = True
    if flags["cuda_enabled"] is False:
        flags.inert("cuda_enabled", "False never disabled anything")
    else:
        flags.drop("cuda_enabled", "cudnn stays enabled")
    for name, why in _RUNTIME.items():
        if name in flags.known and not (task == "prior" and name == "eval_batch_size"):
            flags.drop(name, why)
    for name in flags.given:
        if name in REJECTED_BY_ORIGINAL:
            out.warn("", f"--{name} was refused by the original ({REJECTED_BY_ORIGINAL[name]}); ignored.")
    if flags["data_spatial_dimension"] != 3:
        out.warn("", f"--data_spatial_dimension={flags['data_spatial_dimension']}: 2D runs are converted as 3D volumes.")
    return recipe


def _roi(value: Any) -> Any:
    return _lists(value) if value is not None else None


# -- run_vqvae.py ---------------------------------------------------------------------------------
_VQVAE_LOSSES = {"jukebox_perceptual": "jukebox_perceptual", "perceptual": "perceptual", "mse": "mse", "jukebox": "spectral"}
_METRICS = {"ms-ssim": "ms_ssim", "mae": "mae", "mse": "mse"}
_CRITERIA = {"least_square": "least_square", "hinge": "non_saturating", "vanilla": "hinge"}


def _convert_vqvae(flags: _Flags) -> dict[str, Any]:
    out = flags.out
    recipe = _common(flags, "tokenizer", {"training": "train", "extracting": "extract", "decoding": "decode"})
    if flags["amp"]:
        recipe["precision"] = "fp16"
        out.note("precision", "--amp=True: fp16 autocast; the codebook always runs in fp32, as in the original.")
    if flags["network"] != "baseline_vqvae":
        raise RecipeError(f"--network={flags['network']!r}: only the original's baseline_vqvae has a brainsynth equivalent.")
    if isinstance(flags["training_subjects"], (tuple, list)):
        raise RecipeError("--training_subjects: per-level lists (hierarchical decoding) have no brainsynth equivalent.")
    data: dict[str, Any] = {"name": "nifti", "train": str(flags["training_subjects"]), "val": str(flags["validation_subjects"])}
    if flags["roi"] is not None:
        data["roi"] = _roi(flags["roi"])
    data["canonical"] = bool(flags["load_nii_canonical"])
    data["normalize"] = "zscore" if flags["standardize"] else "minmax"
    if not flags["normalize"] and not flags["standardize"]:
        out.warn("data", "--normalize=False --standardize=False: brainsynth always normalises; minmax is used.")
    probability = float(flags["augmentation_probability"])
    data["augment"] = probability > 0
    data["augmentation_probability"] = probability
    data["augmentation_strength"] = float(flags["augmentation_strength"])
    recipe["data"] = data
    out.note("data", "The original also augmented its evaluation batches (reference §9.3 #8); brainsynth augments training only.")
    flags.drop("normalize", "converted to data.normalize")
    flags.drop("standardize", "converted to data.normalize")
    for name in ("patch_size", "num_samples", "eval_patch_size", "eval_num_samples"):
        flags.unsupported(name, "data", "brainsynth trains on whole (ROI-cropped) volumes")
    flags.unsupported("no_augmented_extractions", "data", "extract writes one token grid per subject")

    codebook: dict[str, Any] = {
        "name": "ema",
        "num_embeddings": int(_first(flags["num_embeddings"])),
        "decay": float(_first(flags["decay"])),
        "commitment_cost": float(_first(flags["commitment_cost"])),
    }
    if flags["decay_warmup"] != "none":
        codebook["decay_warmup"] = flags["decay_warmup"]
        codebook["decay_target"] = 0.99
        if isinstance(flags["max_decay_epochs"], int):
            codebook["max_decay_epochs"] = flags["max_decay_epochs"]
    else:
        flags.inert("max_decay_epochs", "no --decay_warmup, so the decay stayed constant")
    network: dict[str, Any] = {
        "name": "baseline_vqvae",
        "channels": int(flags["no_channels"]),
        "levels": int(flags["no_levels"]),
        "num_res_layers": int(flags["no_res_layers"]),
        "downsample_parameters": _lists(flags["downsample_parameters"]),
        "upsample_parameters": _lists(flags["upsample_parameters"]),
        "embedding_dim": int(_first(flags["embedding_dim"])),
        "codebook": codebook,
        "dropout": float(flags["dropout"]),
        "use_subpixel_conv": bool(flags["use_subpixel_conv"]),
    }
    if flags["output_act"]:
        act = str(flags["output_act"]).lower()
        if act not in ("sigmoid", "tanh", "relu"):
            raise RecipeError(f"--output_act={flags['output_act']!r}: brainsynth offers SIGMOID, TANH or RELU.")
        network["output_act"] = act
    if flags["data_spatial_dimension"] == 2:
        network["spatial_dims"] = 2
        network["in_channels"] = int(flags["data_num_channels"])
    recipe["network"] = network
    for name in ("use_slim_residual", "codebook_type", "embedding_init", "norm", "act"):
        flags.inert(name, "the baseline_vqvae ignores it")
    flags.drop("decay_warmup", "converted to network.codebook")
    flags.drop("data_num_channels", "3D volumes have one channel")

    loss = flags["loss"]
    if loss not in _VQVAE_LOSSES:
        raise RecipeError(
            f"--loss={loss!r} has no brainsynth equivalent; brainsynth offers {', '.join(sorted(_VQVAE_LOSSES))}."
        )
    recipe["loss"] = {"name": _VQVAE_LOSSES[loss]}
    factors = ("initial_factor_value", "initial_factor_steps", "max_factor_steps", "max_factor_value")
    for name in factors:
        flags.inert(name, "only loss='baur' reads it")
    for name in ("med3d_loss_depth", "med3d_checkpoint_path"):
        flags.inert(name, "only loss='ssim_med3d' reads it")

    if flags["adversarial_component"]:
        if flags["discriminator_network"] != "baseline_discriminator":
            out.warn("discriminator", f"--discriminator_network={flags['discriminator_network']!r}: brainsynth has the "
                     "baseline PatchGAN only; it is used instead.")
        recipe["discriminator"] = {"name": "baseline_discriminator", "channels": int(flags["discriminator_channels"]),
                                   "num_layers": int(flags["discriminator_layers"])}
        criterion = flags["discriminator_loss"]
        if criterion != flags["generator_loss"]:
            out.warn("adversarial_loss", f"--generator_loss={flags['generator_loss']!r} differs from --discriminator_loss"
                     f"={criterion!r}; brainsynth uses one criterion for both: {criterion!r}.")
        if criterion not in _CRITERIA:
            raise RecipeError(f"--discriminator_loss={criterion!r}: expected least_square, hinge or vanilla.")
        recipe["adversarial_loss"] = {"name": _CRITERIA[criterion]}
        if criterion != "least_square":
            out.note("adversarial_loss", "The original's 'hinge' and 'vanilla' are swapped (reference §9.3 #4); "
                     "this is the criterion it actually computed.")
        recipe["adversarial"] = {"weight": 0.005, "adaptive": bool(flags["use_adversarial_adaptive_weight"])}
        out.note("adversarial", "The original's fixed adversarial weight 0.005 (reference §3.5).")
        recipe["discriminator_optimizer"] = {"lr": float(flags["discriminator_learning_rate"]),
                                             "schedule": _schedule(flags["gamma"])}
        flags.unsupported("adaptive_adversarial_weight_threshold", "adversarial",
                          "brainsynth's adaptive weight applies from adversarial.start_epoch")
        flags.drop("adaptive_adversarial_weight_value", "used only before the threshold epoch")
        flags.unsupported("finetune_adversarial_component", "adversarial", "no D-first fine-tuning gate in brainsynth")
        flags.drop("finetune_patience", "used only by the fine-tuning gate")
    else:
        for name in ("discriminator_network", "discriminator_channels", "discriminator_layers",
                     "discriminator_learning_rate", "discriminator_loss", "generator_loss"):
            flags.drop(name, "no adversarial component")
    if flags["discriminator_network"] != "taming_discriminator":
        for name in ("discriminator_activation", "discriminator_dropout", "discriminator_normalisation"):
            flags.inert(name, "only the taming discriminator reads it")

    recipe["optimizer"] = {"lr": float(flags["learning_rate"]), "schedule": _schedule(flags["gamma"])}
    train: dict[str, Any] = {"epochs": int(flags["epochs"]), "batch_size": int(flags["batch_size"]),
                             "num_workers": int(flags["num_workers"])}
    eval_every = int(flags["eval_every"])
    if eval_every > 0:
        train["eval_every"] = eval_every
    else:
        train["eval_every"] = max(int(flags["epochs"]), 1)
        out.note("train", "--eval_every=0 (no evaluation): brainsynth evaluates once, after the last epoch.")
    key_metric = _METRICS.get(flags["key_metric"])
    if key_metric is None:
        raise RecipeError(f"--key_metric={flags['key_metric']!r}: expected 'ms-ssim' or 'mae'.")
    train["best_metric"] = key_metric
    recipe["train"] = train
    names = [key_metric] + [_METRICS[m] for m in flags["additional_metrics"] if m in _METRICS]
    recipe["metrics"] = [{"name": n} for n in dict.fromkeys(names)]
    outputs: dict[str, Any] = {"checkpoint": "best"}
    out.note("outputs", "checkpoint: best. An imported tokenizer run holds the original's weights as checkpoints/best.pt; "
             "a run trained here keeps its best validation score there. The original's --evaluation_checkpoint read "
             "its most recent checkpoint (use last for that).")
    if recipe["mode"] == "extract":
        outputs["splits"] = ["val"]
        out.note("outputs", "The original extracted validation_subjects only.")
    if recipe["mode"] == "decode":
        out.warn("outputs", "brainsynth decodes a folder of .npy token grids: set outputs.tokens to it "
                 f"(the original read the list {flags['validation_subjects']}).")
    recipe["outputs"] = outputs
    return recipe


# -- run_transformer.py ---------------------------------------------------------------------------
_CONDITIONING = {"none": "none", "bos_replacement": "bos_replacement", "prepending": "prepend", "cross_attend": "cross_attend"}
def _convert_transformer(flags: _Flags) -> dict[str, Any]:
    out = flags.out
    recipe = _common(flags, "prior", {"training": "train", "inference": "sample"})
    on_the_fly = flags["vqvae_checkpoint"] is not None
    if on_the_fly:
        data: dict[str, Any] = {"name": "nifti", "train": str(flags["training_subjects"]),
                                "val": str(flags["validation_subjects"])}
        if flags["vqvae_aug_roi"] is not None:
            data["roi"] = _roi(flags["vqvae_aug_roi"])
        data["canonical"] = bool(flags["vqvae_aug_load_nii_canonical"])
        data["normalize"] = "zscore" if flags["vqvae_aug_standardize"] else "minmax"
        probability = float(flags["vqvae_aug_augmentation_probability"])
        traced = flags["vqvae_aug_conditionings"] != "none"
        data["augment"] = probability > 0 and not traced
        data["augmentation_probability"] = probability
        data["augmentation_strength"] = float(flags["vqvae_aug_augmentation_strength"])
        recipe["data"] = data
        if traced and probability > 0:
            out.note("data", f"augment: false. The original augmented with p={probability} and told the prior what each "
                     "augmentation did (--vqvae_aug_conditionings); without those context tokens the augmented brains "
                     "would be unexplained, so augmentation stays off.")
        tokenizer_run = f"{_root(flags['project_directory'])}/{Path(str(flags['vqvae_checkpoint'])).stem}_tokenizer"
        recipe["tokenizer"] = {"run": tokenizer_run, "checkpoint": "best"}
        out.note("tokenizer", f"Volumes are tokenized on the fly by a frozen tokenizer (the original's --vqvae_checkpoint "
                 f"{flags['vqvae_checkpoint']}). Create that run once, from the VQ-VAE script converted by import-script:")
        out.note("tokenizer", f"  brainsynth import-checkpoint {flags['vqvae_checkpoint']} --recipe vqvae.yaml --run "
                 f"--set experiment.root={_root(flags['project_directory'])} --set experiment.name={Path(tokenizer_run).name}")
        out.note("tokenizer", f"Its network is the VQ-VAE of these flags: {_vqvae_summary(flags)}.")
        out.note("tokenizer", "brainsynth keeps the tokenizer frozen in eval mode; the original let its EMA codebook drift "
                 "during transformer training (reference §9.3 #1).")
        if flags["vqvae_aug_conditionings"] != "none":
            out.warn("conditioning", f"--vqvae_aug_conditionings={flags['vqvae_aug_conditionings']!r} is not supported: "
                     "brainsynth does not condition on augmentation traces; those context tokens are left out (and "
                     "augmentation is off).")
        if flags["vqvae_network"] != "baseline_vqvae" or flags["vqvae_net_level"] != 0:
            raise RecipeError("--vqvae_network/--vqvae_net_level: only the baseline_vqvae's level 0 has an equivalent.")
    else:
        recipe["data"] = {"name": "tokens", "train": str(flags["training_subjects"]), "val": str(flags["validation_subjects"])}
        out.note("data", "Pre-extracted .npy token grids (folders written by 'brainsynth run <tokenizer> --mode extract').")
    for name in [n for n in flags.known if n.startswith("vqvae_")]:
        if not on_the_fly:
            flags.drop(name, "no --vqvae_checkpoint, so no on-the-fly tokenisation")
        elif name == "vqvae_aug_conditionings":
            flags.drop(name, "not supported (see the warning above 'conditioning')" if flags[name] != "none"
                       else "no augmentation-trace conditioning; nothing to convert")
        elif name.startswith("vqvae_aug_"):
            flags.drop(name, "converted to data")
        else:
            flags.drop(name, "describes the tokenizer run (see the comment above 'tokenizer')")
    flags.drop("eval_every", "converted to train.eval_every")

    ordering = _ordering(flags)
    recipe["ordering"] = ordering
    recipe["conditioning"] = _conditioning(flags)
    recipe["network"] = _network(flags)
    flags.drop("vocab_size", "the vocabulary is the tokenizer's codebook size (+ BOS)")
    recipe["optimizer"] = {"lr": float(flags["learning_rate"]), "schedule": _schedule(flags["gamma"])}
    epochs = int(flags["epochs"])
    train: dict[str, Any] = {"epochs": epochs, "batch_size": int(flags["batch_size"]),
                             "num_workers": int(flags["num_workers"]), "weighted": bool(flags["weighted_sampling"])}
    eval_every = int(flags["eval_every"])
    train["eval_every"] = eval_every if eval_every > 0 else max(epochs, 1)
    if eval_every == 0:
        out.note("train", "--eval_every=0: the original never validated; brainsynth validates once, after the last "
                 "epoch (data.val stays: the original sampled its subjects).")
    if recipe["conditioning"]["name"] != "none":
        train["missing"] = "drop"
        out.note("train", "missing: drop. The original skipped subjects without a table row or value, with a warning.")
    recipe["train"] = train
    if flags["weighted_sampling"]:
        out.note("train", "Weighted sampling reads the conditioning table's 'weight' column, as the original did.")
    flags.drop("eval_batch_size", "converted to sample.batch_size (the original's sampling batch)")
    sample: dict[str, Any] = {"checkpoint": "best", "batch_size": int(flags["eval_batch_size"]),
                              "temperature": float(flags["temperature"])}
    out.note("sample", "checkpoint: best. An imported prior run holds the original's weights as checkpoints/best.pt; a "
             "run trained here keeps the lowest validation CE there (the last epoch when validated only at the end). "
             "The original's --evaluation_checkpoint read its most recent checkpoint.")
    if flags["top_k"] is not None:
        sample["top_k"] = int(flags["top_k"])
    if not flags["sample"]:
        sample["top_k"] = 1
        out.note("sample", "--sample=False (greedy arg-max) is top_k: 1.")
    multiplier = max(1, int(flags["additional_samples_multiplier"]))
    if recipe["conditioning"]["name"] != "none":
        sample["split"] = "val"
        sample["samples_per_condition"] = multiplier
        out.note("sample", f"As the original: {multiplier} sample(s) per validation subject, conditioned on its table "
                 "row (max(1, --additional_samples_multiplier)). Other conditions: sample.values or sample.grid instead "
                 "of sample.split.")
    else:
        out.note("sample", f"The original drew {multiplier} sample(s) per validation subject; set sample.num_samples to "
                 f"that count (default 8).")
    recipe["sample"] = sample
    return recipe


def _vqvae_summary(flags: _Flags) -> str:
    return (f"{flags['vqvae_net_no_levels']} levels, {flags['vqvae_net_no_channels']} channels, "
            f"{flags['vqvae_net_no_res_layers']} residual layers, codebook {_first(flags['vqvae_net_num_embeddings'])} x "
            f"{_first(flags['vqvae_net_embedding_dim'])}, decay {_first(flags['vqvae_net_decay'])}, "
            f"commitment {_first(flags['vqvae_net_commitment_cost'])}")


def _ordering(flags: _Flags) -> dict[str, Any]:
    out = flags.out
    kind = flags["ordering_type"]
    if kind not in ("raster_scan", "s_curve", "random", "hilbert_curve"):
        raise RecipeError(f"--ordering_type={kind!r}: expected raster_scan, s_curve, random or hilbert_curve.")
    ordering: dict[str, Any] = {"name": kind}
    if kind == "hilbert_curve":
        ordering["curve"] = "gilbert"
        out.note("ordering", "curve: gilbert reads tokens in the original's exact Hilbert order.")
    if kind == "random":
        if flags["deterministic"]:
            ordering["seed"] = int(flags["seed"])
            out.note("ordering", "seed: the original's --seed; with --deterministic=True its rank-0 random order "
                     "(np.random.seed(seed), then a shuffle) is reproduced exactly.")
        else:
            ordering["seed"] = 0
            out.warn("ordering", "--ordering_type=random without --deterministic=True: the original's order was "
                     "unseeded and is lost; a prior it trained cannot be read in its order. Seed 0 is used.")
    reflected = [bool(v) for v in flags["reflected_spatial_dims"]]
    if any(reflected):
        ordering["reflected_spatial_dims"] = reflected
    if flags["transpositions_axes"]:
        ordering["transpositions_axes"] = _lists(flags["transpositions_axes"])
    if flags["rot90_axes"]:
        ordering["rot90_axes"] = _lists(flags["rot90_axes"])
    ordering["transformation_order"] = list(flags["transformation_order"])
    return ordering


def _conditioning(flags: _Flags) -> dict[str, Any]:
    out = flags.out
    kind = flags["conditioning_type"]
    if kind not in _CONDITIONING:
        raise RecipeError(f"--conditioning_type={kind!r}: expected {', '.join(_CONDITIONING)}.")
    columns = list(flags["conditionings"] or ())
    if kind == "none" or not columns:
        flags.drop("conditionings", "conditioning_type is none")
        flags.drop("conditioning_path", "conditioning_type is none")
        return {"name": "none"}
    continuous = flags["use_continuous_conditioning"]
    kinds = list(continuous) if isinstance(continuous, (tuple, list)) else [continuous] * len(columns)
    if len(kinds) != len(columns):
        raise RecipeError(f"--use_continuous_conditioning has {len(kinds)} entries for {len(columns)} conditionings.")
    if flags["conditioning_path"] is None:
        raise RecipeError("--conditionings needs --conditioning_path (the table of the subjects' values).")
    variables = [
        {"column": str(c), "kind": "continuous", "normalize": "none"} if k else {"column": str(c), "kind": "categorical"}
        for c, k in zip(columns, kinds)
    ]
    # The original's vector order: last variable first (it prepended each new vector), except that
    # the performer wrapper summed BOS replacements in listed order (bit-equal only in that order).
    order = "listed" if kind == "bos_replacement" and flags["network"] == "performer" else "last_first"
    out.note("conditioning", "As the original: the table's values are fed as stored (normalize: none; it did no "
             "normalisation in code), each continuous value tiled over the model width with no learnt projection "
             f"(continuous_embedding: tiled), and the vectors in its order (order: {order}).")
    if not all(kinds):
        out.note("conditioning", "Categorical values index their embedding rows directly in the original: they must "
                 "already be 0..count-1.")
    out.note("conditioning", "Subjects are matched on the table's 'subject' column, with or without .nii/.nii.gz/.npy.")
    return {"name": _CONDITIONING[kind], "table": str(flags["conditioning_path"]), "variables": variables,
            "continuous_embedding": "tiled", "order": order}


_XTRANSFORMER_KEYS = (
    "emb_dropout", "ff_dropout", "attn_dropout", "tie_embedding", "ff_glu", "use_rezero", "position_emb",
    "spatial_position_emb", "use_rmsnorm", "attn_talking_heads", "attn_gate_values", "attn_on_attn", "sandwich_coef",
    "sandwich_norm", "rel_pos_bias", "spatial_rel_pos_bias", "bucket_values", "spatial_bias_max_dist",
    "use_qk_norm_attn", "residual_attn", "cross_residual_attn", "gate_residual",
)
"""The original's xtransformer flags that ``original_xtransformer`` takes under the same name."""


def _network(flags: _Flags) -> dict[str, Any]:
    out = flags.out
    name = flags["network"]
    dropouts = {k: float(flags[k]) for k in ("emb_dropout", "ff_dropout", "attn_dropout")}
    position = flags["position_emb"]
    if name == "performer":
        network = {"name": "performer", "dim": int(flags["n_embd"]), "depth": int(flags["n_layers"]),
                   "heads": int(flags["n_head"]), "dim_head": 64, "local_attn_heads": int(flags["local_attn_heads"]),
                   "local_window_size": int(flags["local_window_size"]),
                   "feature_redraw_interval": int(flags["feature_redraw_interval"]),
                   "generalized_attention": bool(flags["generalized_attention"]),
                   "use_scalenorm": bool(flags["use_scalenorm"]), "use_rezero": bool(flags["use_rezero"]), **dropouts,
                   "position_emb": position if position in ("rotary", "fixed") else "absolute",
                   "tie_embedding": bool(flags["tie_embedding"])}
        flags.inert("ff_glu", "the original never passed it to the performer")
        for option in ("use_rmsnorm", "attn_talking_heads", "attn_gate_values", "attn_on_attn", "sandwich_coef",
                       "sandwich_norm", "rel_pos_bias", "spatial_rel_pos_bias", "bucket_values", "spatial_bias_max_dist",
                       "use_qk_norm_attn", "residual_attn", "cross_residual_attn", "gate_residual", "shift_mem_down"):
            flags.drop(option, "xtransformer-only; performer ignores it")
        if flags["spatial_position_emb"] is not None:
            network["spatial_pos_emb"] = str(flags["spatial_position_emb"])  # the original's absolute / fixed tables
        network["sampling_decoder"] = "recurrent"
        out.note("network", "performer: the original's wrapper around performer-pytorch; its checkpoints import exactly "
                 "(brainsynth import-checkpoint). sampling_decoder: recurrent does one token's work per step; "
                 "'recompute' re-runs the prefix for every token, as the original sampled, and reproduces its samples "
                 "bit for bit at about 50-90x the cost (they differ when two or more layers hold FAVOR+ heads, whose "
                 "key stabiliser in performer-pytorch sees the whole prefix).")
        return network
    if name != "xtransformer":
        raise RecipeError(f"--network={name!r}: expected xtransformer or performer.")
    # original_xtransformer reproduces the original's x-transformers 0.25.4 decoder, so the paper's
    # checkpoints import exactly; brainsynth's own 'xtransformer' (x-transformers 2.x) is the modern
    # choice for training new priors.
    network: dict[str, Any] = {"name": "original_xtransformer", "dim": int(flags["n_embd"]),
                               "depth": int(flags["n_layers"]), "heads": int(flags["n_head"])}
    for key in _XTRANSFORMER_KEYS:
        value = flags[key]
        network[key] = _lists(value) if isinstance(value, (tuple, list)) else value
    out.note("network", "original_xtransformer: the original's x-transformers 0.25.4 decoder, option for option (its "
             "checkpoints import exactly); the flags keep their names, except n_embd/n_layers/n_head -> dim/depth/heads. "
             "For new training, brainsynth's 'xtransformer' is the modern equivalent.")
    flags.inert("shift_mem_down", "no memories are ever passed")
    for option in ("local_attn_heads", "local_window_size", "feature_redraw_interval", "generalized_attention",
                   "use_scalenorm"):
        flags.inert(option, "performer-only")
    return network


# -- entry point --------------------------------------------------------------------------------
def convert_script(path: str | Path) -> Conversion:
    """Read an original experiment script and convert its command line into a recipe."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(f"{path}: script not found.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: cannot read the script ({exc}).") from None
    script, given = parse_command(text, str(path))
    conversion = Conversion(script)
    flags = _Flags(SCRIPTS[script], given, conversion)
    conversion.recipe = _convert_vqvae(flags) if script == "run_vqvae.py" else _convert_transformer(flags)
    return conversion
