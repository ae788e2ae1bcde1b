"""A head whose input width is taken from the first batch it sees.

Objectives own their heads, but they are configured independently of the encoders (in YAML,
a test overriding ``hidden_channels`` of an encoder must not have to override every head as
well). :class:`LazyHead` builds its head with the encoder width read from the first input,
the way :class:`torch.nn.LazyLinear` does for one layer, but for any head built by a
``factory(width)`` — an MLP, or :class:`~molssl.encoders.heads.EquivariantVectorHead`.

How it stays compatible with optimisers and checkpoints:

* Until the first call, every parameter of the head is a
  :class:`torch.nn.parameter.UninitializedParameter` registered under its final name, so an
  optimiser created before the first batch (Lightning's ``configure_optimizers``) already
  holds the very objects that get trained. On the first call each one is materialised in
  place with the shape and initial values of ``factory(width)``.
* The width is a buffer (``in_dim``), so it is saved in the ``state_dict``; loading a
  checkpoint into a fresh lazy head builds the head at that width first, so
  ``load_from_checkpoint`` works without a forward pass.
* Distributed wrappers (DDP) need materialised parameters: run one batch before wrapping.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parameter import UninitializedParameter

__all__ = ["LazyHead", "input_width"]


def input_width(first: Any) -> int:
    """Feature width of a head's first input: a ``(..., D)`` tensor or an ``EncoderOutput``."""
    node = getattr(first, "node", None)
    if isinstance(node, Tensor):
        return int(node.shape[-1])
    if isinstance(first, Tensor) and first.dim() >= 1:
        return int(first.shape[-1])
    raise TypeError(
        "cannot infer the input width of a lazy head from a "
        f"{type(first).__name__}; pass a (..., D) tensor or an EncoderOutput"
    )


class LazyHead(nn.Module):
    """Wraps ``factory(width)``; the width is given or read from the first call's input.

    Args:
        factory: Builds the head for a given input width; it must be picklable (a class or a
            module-level function) so views and modules can travel to loader workers, and the
            names of its parameters must not depend on the width.
        in_dim: The width, when known; the head is then built at once.
        template_dim: Width of the throw-away template used only to learn the parameter
            names of the head before the real width is known.

    The wrapped head is ``self.module``; calling the ``LazyHead`` calls it with the same
    arguments.
    """

    in_dim: Tensor

    def __init__(
        self, factory: Callable[[int], nn.Module], in_dim: int | None = None, template_dim: int = 8
    ) -> None:
        super().__init__()
        if in_dim is not None and in_dim < 1:
            raise ValueError(f"in_dim must be a positive width, got {in_dim}")
        self.factory = factory
        # A Python mirror of the in_dim buffer: reading the buffer on every call would force
        # a device-to-host synchronisation per step on GPU.
        self.width: int | None = None if in_dim is None else int(in_dim)
        self.register_buffer("in_dim", torch.tensor(-1 if in_dim is None else int(in_dim)))
        if in_dim is not None:
            self.module = factory(int(in_dim))
            return
        self.module = factory(template_dim)
        for name, _ in list(self.module.named_parameters()):
            owner_name, _, leaf = name.rpartition(".")
            owner = self.module.get_submodule(owner_name)
            owner._parameters[leaf] = UninitializedParameter()

    @property
    def is_materialized(self) -> bool:
        """Whether the head has been built at its real width."""
        return self.width is not None

    def materialize(self, width: int) -> None:
        """Build the head at ``width``, keeping the registered parameter objects.

        Raises:
            ValueError: If the head is already built at another width, or the factory's
                parameters do not match the template's.
        """
        if self.width is not None:
            if self.width != width:
                raise ValueError(
                    f"this head was built for inputs of width {self.width}, got {width}"
                )
            return
        # The first batch may be a validation batch run under inference mode (Lightning's
        # sanity check); tensors made there could never be trained, so build outside it.
        with torch.inference_mode(False):
            self._build(width)

    def _build(self, width: int) -> None:
        placeholders = dict(self.module.named_parameters())
        built = self.factory(width)
        built_parameters = dict(built.named_parameters())
        if built_parameters.keys() != placeholders.keys():
            raise ValueError(
                "the head factory builds different parameters at different widths; "
                "LazyHead needs width-independent parameter names"
            )
        device = self.in_dim.device
        for name, placeholder in placeholders.items():
            value = built_parameters[name]
            # materialize() swaps the object's class in place, so an optimiser created
            # before this call keeps a reference to the parameter that will be trained.
            placeholder.materialize(value.shape)
            with torch.no_grad():
                placeholder.copy_(value)
            owner_name, _, leaf = name.rpartition(".")
            built.get_submodule(owner_name)._parameters[leaf] = placeholder
        self.module = built.to(device=device)
        self.in_dim.fill_(width)
        self.width = width

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Build the head on first use (width from the first argument), then call it."""
        if not self.is_materialized:
            if not args:
                raise TypeError("LazyHead needs its input as the first positional argument")
            self.materialize(input_width(args[0]))
        return self.module(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        """As :meth:`torch.nn.Module.state_dict`, once the head has been built.

        Raises:
            RuntimeError: Before the first batch (nothing to save yet).
        """
        if not self.is_materialized:
            raise RuntimeError(
                "LazyHead has not seen an input yet, so its parameters have no shape: run "
                "one batch through the objective (or give its width) before saving"
            )
        return super().state_dict(*args, **kwargs)

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Children are loaded after their parent, so building the head here, at the saved
        # width, gives them the right shapes to load into.
        saved = state_dict.get(prefix + "in_dim")
        if isinstance(saved, Tensor) and int(saved) > 0 and not self.is_materialized:
            self.materialize(int(saved))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def extra_repr(self) -> str:
        return f"in_dim={'lazy' if self.width is None else self.width}"
