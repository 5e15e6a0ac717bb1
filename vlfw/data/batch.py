"""Sample and Batch, and the padding-aware collate that turns samples into a batch.

A Sample is a dict of fields with attribute access. Tensor fields that differ in size between
samples are padded to the largest size in every dimension; the fields listed in MASKS also get
a boolean mask marking the real (unpadded) entries. Everything that is not a tensor is kept as a
list. See docs/data.md for the field conventions.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Iterable, Mapping, Sequence

import torch

# field -> (mask field, number of leading dims the mask covers counted from the end: the mask
# has the field's shape without its last `feature_dims` dims)
MASKS: dict[str, tuple[str, int]] = {
    "input_ids": ("attention_mask", 0),
    "answer_input_ids": ("answer_attention_mask", 0),
    "rationale_input_ids": ("rationale_attention_mask", 0),
    "region_features": ("region_mask", 1),
    "patch_features": ("patch_mask", 1),
}

# padding values other than 0
PAD_VALUES: dict[str, Any] = {
    "mlm_labels": -100,
    "region_labels": -100,
    "labels": -100,
}


def pad_value(field: str, pad_values: Mapping[str, Any] | None = None) -> Any:
    """The value `field` is padded with: `pad_values` (a field name or a pattern such as
    "*input_ids") first, then PAD_VALUES, -100 for `*_labels`, else 0."""
    if pad_values:
        if field in pad_values:
            return pad_values[field]
        for pattern, value in pad_values.items():
            if fnmatchcase(field, pattern):
                return value
    if field in PAD_VALUES:
        return PAD_VALUES[field]
    if field.endswith("_labels"):
        return -100
    return 0


class Sample(dict):
    """One example: a dict with attribute access."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"sample has no field {name!r}; fields: {sorted(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


class Batch(dict):
    """Collated samples: a dict with attribute access, `.to(device)` and `dataset_name`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"batch has no field {name!r}; fields: {sorted(self)}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    @property
    def dataset_name(self) -> str | None:
        return self.get("dataset_name")

    @property
    def batch_size(self) -> int:
        for value in self.values():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                return int(value.shape[0])
            if isinstance(value, list):
                return len(value)
        return 0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        moved = Batch()
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                value = value.to(device, non_blocking=non_blocking)
            dict.__setitem__(moved, key, value)
        return moved

    def pin_memory(self) -> "Batch":
        pinned = Batch()
        for key, value in self.items():
            dict.__setitem__(pinned, key, value.pin_memory() if isinstance(value, torch.Tensor) else value)
        return pinned

    def select(self, index: torch.Tensor | Sequence[int]) -> "Batch":
        """The sub-batch of the given rows."""
        index = torch.as_tensor(index, dtype=torch.long)
        out = Batch()
        for key, value in self.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                value = value[index.to(value.device)]
            elif isinstance(value, list):
                value = [value[i] for i in index.tolist()]
            dict.__setitem__(out, key, value)
        return out


def pad_stack(tensors: Sequence[torch.Tensor], value: Any = 0) -> torch.Tensor:
    """Stack tensors of equal rank, padding every dimension to the largest size."""
    first = tensors[0]
    if all(t.shape == first.shape for t in tensors):
        return torch.stack(list(tensors))
    if any(t.dim() != first.dim() for t in tensors):
        raise ValueError(f"cannot collate tensors of different rank: {[tuple(t.shape) for t in tensors]}")
    shape = [len(tensors)] + [max(t.shape[d] for t in tensors) for d in range(first.dim())]
    out = first.new_full(shape, value)
    for i, t in enumerate(tensors):
        out[(i,) + tuple(slice(0, s) for s in t.shape)] = t
    return out


def _real_mask(tensors: Sequence[torch.Tensor], feature_dims: int) -> torch.Tensor:
    shapes = [t.shape[: t.dim() - feature_dims] for t in tensors]
    ones = [torch.ones(s, dtype=torch.bool) for s in shapes]
    return pad_stack(ones, False)


def collate(samples: Iterable[Sample], dataset_name: str | None = None,
            pad_values: Mapping[str, Any] | None = None) -> Batch:
    """Collate samples into a Batch: pad tensors, add masks, keep other values as lists.

    `pad_values` maps field names or patterns to padding values, e.g. {"*input_ids": 1} for a
    tokenizer whose pad id is 1 (dataset builders pass their tokenizer's). Masks are computed
    from the sizes, never from the padding value."""
    samples = list(samples)
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    batch = Batch()
    keys = list(samples[0].keys())
    for sample in samples[1:]:
        if list(sample.keys()) != keys and set(sample.keys()) != set(keys):
            missing = set(keys) ^ set(sample.keys())
            raise ValueError(f"samples in one batch have different fields: {sorted(missing)}")
    for key in keys:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            batch[key] = pad_stack(values, pad_value(key, pad_values))
            if key in MASKS and MASKS[key][0] not in keys:
                mask_name, feature_dims = MASKS[key]
                batch[mask_name] = _real_mask(values, feature_dims)
        else:
            batch[key] = values
    if dataset_name is not None:
        batch["dataset_name"] = dataset_name
    return batch
