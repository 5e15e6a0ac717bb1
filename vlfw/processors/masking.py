"""Masked language and region modelling: whole-word masking and region masking."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from vlfw.processors.base import Processor
from vlfw.registry import PROCESSORS

IGNORE_INDEX = -100


def whole_word_mask(
    input_ids: torch.Tensor,
    word_ids: Sequence[int | None],
    vocab_size: int,
    mask_id: int,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
    special_ids: set | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask whole words: returns (masked input_ids, mlm_labels with -100 where not masked).

    Each word is chosen with `probability` (at least one when the text has a word); every token
    of a chosen word becomes [MASK] 80% of the time, a random token 10%, itself 10%. Tokens
    whose word id is None or whose id is in `special_ids` are never masked or used as random
    replacements.
    """
    if input_ids.dim() != 1:
        raise ValueError(f"whole_word_mask expects a 1-d input_ids tensor, got shape {tuple(input_ids.shape)}")
    if len(word_ids) != input_ids.numel():
        raise ValueError(f"word_ids has {len(word_ids)} entries for {input_ids.numel()} tokens")
    special_ids = set(special_ids or ())
    masked = input_ids.clone()
    labels = torch.full_like(input_ids, IGNORE_INDEX)

    words: dict[int, list[int]] = {}
    for position, (token_id, word) in enumerate(zip(input_ids.tolist(), word_ids)):
        if word is None or token_id in special_ids:
            continue
        words.setdefault(int(word), []).append(position)
    if not words:
        return masked, labels
    order = sorted(words)

    chosen = torch.rand(len(order), generator=generator) < probability
    if not bool(chosen.any()):
        chosen[int(torch.randint(len(order), (1,), generator=generator))] = True
    positions = [p for keep, word in zip(chosen.tolist(), order) if keep for p in words[word]]
    index = torch.tensor(positions, dtype=torch.long)
    labels[index] = input_ids[index]

    action = torch.rand(len(positions), generator=generator)
    random_tokens = torch.randint(vocab_size, (len(positions),), generator=generator)
    if special_ids:
        # a random replacement is never a special token: redraw those (rejection sampling)
        if sum(1 for i in special_ids if 0 <= i < vocab_size) >= vocab_size:
            raise ValueError("whole_word_mask: every vocabulary id is a special id")
        specials = torch.tensor(sorted(special_ids), dtype=torch.long)
        bad = torch.isin(random_tokens, specials)
        while bool(bad.any()):
            random_tokens[bad] = torch.randint(vocab_size, (int(bad.sum()),), generator=generator)
            bad = torch.isin(random_tokens, specials)
    replaced = input_ids[index].clone()
    replaced[action < 0.8] = mask_id
    use_random = (action >= 0.8) & (action < 0.9)
    replaced[use_random] = random_tokens[use_random].to(replaced.dtype)
    masked[index] = replaced
    return masked, labels


def mask_regions(num_regions: int, probability: float = 0.15, generator: torch.Generator | None = None) -> torch.Tensor:
    """BoolTensor (num_regions,): True for the regions to mask, each chosen with `probability`."""
    if num_regions <= 0:
        return torch.zeros(0, dtype=torch.bool)
    return torch.rand(num_regions, generator=generator) < probability


@PROCESSORS.register("whole_word_masking")
class WholeWordMasking(Processor):
    """Applies `whole_word_mask` to a tokenizer's output dict, adding `mlm_labels`.

    Params: `probability` (0.15; 0 turns masking off: the output is left unchanged, with no
    `mlm_labels`), and `vocab_size`, `mask_id`, `special_ids`, or a `tokenizer` (a text processor,
    injected by the dataset builder) from which the ids are taken.
    """

    def __init__(
        self,
        probability: float = 0.15,
        vocab_size: int | None = None,
        mask_id: int | None = None,
        special_ids: Sequence[int] | None = None,
        tokenizer: Any = None,
    ) -> None:
        super().__init__(probability=probability, vocab_size=vocab_size, mask_id=mask_id, special_ids=special_ids)
        if tokenizer is not None:
            vocab_size = tokenizer.vocab_size if vocab_size is None else vocab_size
            mask_id = tokenizer.mask_id if mask_id is None else mask_id
            if special_ids is None:
                special_ids = sorted(tokenizer.special_ids)
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError(f"whole_word_masking: probability must be in [0, 1], got {probability}")
        self.probability = float(probability)
        if self.probability > 0 and (vocab_size is None or mask_id is None):
            raise ValueError("whole_word_masking needs vocab_size and mask_id (or a tokenizer with a mask token)")
        self.vocab_size = None if vocab_size is None else int(vocab_size)
        self.mask_id = None if mask_id is None else int(mask_id)
        self.special_ids = set(int(i) for i in (special_ids or ()))

    @property
    def enabled(self) -> bool:
        return self.probability > 0

    def __call__(self, encoded: dict, generator: torch.Generator | None = None) -> dict:  # type: ignore[override]
        if not self.enabled:
            return encoded
        masked, labels = whole_word_mask(
            encoded["input_ids"], encoded["word_ids"], self.vocab_size, self.mask_id,
            self.probability, generator, self.special_ids,
        )
        out = dict(encoded)
        out["input_ids"] = masked
        out["mlm_labels"] = labels
        return out


@PROCESSORS.register("region_masking")
class RegionMasking(Processor):
    """`mask_regions` as a processor: number of regions -> `masked_regions` BoolTensor (N,).

    Params: `probability` (0.0 = off: the dataset adds no `masked_regions`)."""

    def __init__(self, probability: float = 0.0) -> None:
        super().__init__(probability=probability)
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError(f"region_masking: probability must be in [0, 1], got {probability}")
        self.probability = float(probability)

    @property
    def enabled(self) -> bool:
        return self.probability > 0

    def __call__(self, num_regions: int, generator: torch.Generator | None = None) -> torch.Tensor:  # type: ignore[override]
        return mask_regions(int(num_regions), self.probability, generator)
