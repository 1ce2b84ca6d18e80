"""The component kinds, as data: what a component of each kind must be, and what the engine gives it.

One table (`KIND_TABLE`) says, for every kind:

* `contract`: the base class a component's class must subclass (``"module:Class"``, imported only
  when a component is checked, so that reading this table costs no torch import), and `members`:
  what that class must implement itself (a kind without a base class is a protocol of members);
* `supplies`: the arguments the engine passes at build time (the vocabulary size, the token grid,
  ...). A factory takes those it declares; they are never recipe keys. `requires` are the ones a
  factory must declare (a prior that cannot take ``conditioning`` would ignore it silently);
* `nested`: blocks inside a component's own block (a tokenizer's ``codebook``) that the engine
  builds with the run's registry before calling the factory;
* `settings`: keys every block of the kind takes that the engine reads, not the factory (an
  optimizer's ``grad_clip`` and ``schedule``);
* `aliases`: former names that recipes may still use (``transformer`` for ``prior``).

The registry checks a component against its kind when its factory is first resolved: at
registration for a factory given as an object, on first use for one named lazily.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class Nested:
    """A nested component block: parameter `parameter` holds a block of `kind`.

    `default` names the component built when the block is left out; `passes` are parent
    parameters handed to the nested factory as engine-supplied arguments (a codebook's
    ``embedding_dim`` is the tokenizer's).
    """

    parameter: str
    kind: str
    default: str | None = None
    passes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Kind:
    """One component kind: its contract and what the engine supplies (see the module docstring)."""

    name: str
    doc: str
    contract: str | None = None
    members: tuple[str, ...] = ()
    supplies: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    nested: tuple[Nested, ...] = ()
    settings: str | None = None
    """A dataclass (``"module:Class"``) of keys the engine reads from every block of this kind."""
    aliases: tuple[str, ...] = ()

    def contract_class(self) -> type | None:
        return resolve(self.contract) if self.contract else None

    def settings_class(self) -> type | None:
        return resolve(self.settings) if self.settings else None

    def problems(self, factory: Callable[..., Any]) -> list[str]:
        """What `factory` lacks to meet this kind's contract (empty when it meets it)."""
        found = []
        accepted = factory_arguments(factory)
        for argument in self.requires:
            if accepted is not None and argument not in accepted:
                found.append(f"`{argument}` (an argument the engine supplies; add it to the signature)")
        if not inspect.isclass(factory):
            return found  # a function: what it returns is checked when it is built
        base = self.contract_class()
        if base is not None and not issubclass(factory, base):
            found.append(f"the base class {base.__module__}.{base.__qualname__} (subclass it)")
            return found
        for member in self.members:
            if not hasattr(factory, member) or (base is not None and getattr(factory, member) is getattr(base, member, None)):
                found.append(f"`{member}`")
        return found

    def describe(self) -> str:
        """The contract in words, for ``brainsynth plugins`` and messages."""
        parts = []
        if self.contract:
            parts.append(f"be or build a {self.contract.replace(':', '.')}")
        if self.members:
            parts.append(f"implement {', '.join(self.members)}")
        if self.requires:
            parts.append(f"accept {', '.join(self.requires)}")
        if self.supplies:
            parts.append(f"engine supplies {', '.join(self.supplies)}")
        if self.nested:
            parts.append("engine builds " + ", ".join(f"{n.parameter} ({n.kind})" for n in self.nested))
        return "; ".join(parts)


def resolve(reference: str) -> Any:
    """The object a ``"package.module:Name"`` reference names."""
    module, _, name = reference.partition(":")
    target: Any = importlib.import_module(module)
    for part in name.split("."):
        target = getattr(target, part)
    return target


def factory_arguments(factory: Callable[..., Any]) -> set[str] | None:
    """Keyword arguments `factory` accepts (a class: its ``__init__``); None when it takes ``**kwargs``."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        parameters = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


KIND_TABLE: tuple[Kind, ...] = (
    Kind("task", "a workflow over a recipe (sections, modes, run)",
         contract="brainsynth.core.task:Task", members=("run",)),
    Kind("tokenizer", "a VQ-VAE: volume -> token grid -> volume",
         contract="brainsynth.core.tokenizer:Tokenizer",
         members=("encode", "decode", "token_grid", "output_shape"),
         nested=(Nested("codebook", "codebook", default="ema", passes=("embedding_dim",)),)),
    Kind("prior", "an autoregressive network over token sequences",
         contract="brainsynth.core.prior:Prior", members=("forward",),
         supplies=("num_tokens", "max_seq_len", "ordering", "conditioning"),
         requires=("num_tokens", "conditioning"), aliases=("transformer",)),
    Kind("discriminator", "a patch discriminator for adversarial tokenizer training",
         contract="torch.nn:Module", members=("forward",)),
    Kind("codebook", "the tokenizer's quantiser",
         contract="brainsynth.core.tokenizer:Codebook", members=("quantize", "codes"),
         supplies=("embedding_dim",), requires=("embedding_dim",)),
    Kind("loss", "a reconstruction loss", contract="brainsynth.core.tokenizer:ReconstructionLoss", members=("forward",)),
    Kind("adversarial_loss", "the adversarial criterion", members=("generator_loss", "discriminator_loss")),
    Kind("ordering", "a permutation of the token grid",
         contract="brainsynth.core.ordering:Ordering", members=("walk",),
         supplies=("spatial_shape",), requires=("spatial_shape",)),
    Kind("conditioning", "embeds subject variables for a prior",
         contract="brainsynth.core.prior:Conditioning", supplies=("model_dim", "num_levels")),
    Kind("dataset", "named splits of subjects", contract="brainsynth.core.data:DataSource",
         members=("splits", "subjects", "split")),
    Kind("metric", "per-volume metric(reconstruction, target)", members=("__call__", "higher_is_better")),
    Kind("set_metric", "set-level metric(samples, references)", members=("__call__", "higher_is_better")),
    Kind("optimizer", "builds a torch optimizer over the trained parameters",
         contract="torch.optim:Optimizer", supplies=("parameters",), requires=("parameters",),
         settings="brainsynth.core.optimization:OptimizerSettings"),
    Kind("lr_schedule", "a learning-rate schedule, stepped every iteration",
         contract="torch.optim.lr_scheduler:LRScheduler", supplies=("optimizer", "total_steps"),
         requires=("optimizer",)),
)

KINDS: Mapping[str, Kind] = {kind.name: kind for kind in KIND_TABLE}
ALIASES: Mapping[str, str] = {alias: kind.name for kind in KIND_TABLE for alias in kind.aliases}


def canonical(kind: str) -> str:
    """The kind an alias stands for (``transformer`` -> ``prior``); other names unchanged."""
    return ALIASES.get(kind, kind)
