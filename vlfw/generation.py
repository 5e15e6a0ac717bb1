"""Sequence generation shared by every generative model: greedy and beam search with a KV cache.

A model takes part by implementing two methods (the `GenerativeModel` protocol below); the
search, the beams, the cache reordering and the stopping rules live here, so a model writes no
beam code::

    class MyCaptioner(BaseModel):
        def generation_context(self, batch):            # once per batch
            memory, mask = self.encode_image(batch)
            return {"memory": memory, "memory_mask": mask}

        def generation_step(self, input_ids, context, cache):   # once per generated token
            ...                                          # input_ids (N, 1): the last token
            return logits, new_cache                     # logits (N, V) for the next token

Scores. A hypothesis of `length` tokens (the tokens generated after bos, *counting its eos*
when it has one) scores ``sum of their log-probabilities / length ** length_penalty``.
length_penalty 0 ranks by the plain sum (favours short captions), 1 by the mean per token
(the default), above 1 favours longer ones. A hypothesis still running when `max_length`
tokens have been generated is finished there, without eos, with length = max_length.

Beam search keeps `num_beams` running hypotheses per sample: at every step each is extended by
every token except eos and the best `num_beams` extensions per sample survive; the eos
extension of every running hypothesis is a finished candidate (not only those among the top
ranks), and the best finished candidate per sample is returned. A sample stops when no running
hypothesis can still beat its best finished one (an exact bound, below), so stopping early never
changes the result; with a beam wide enough to hold every prefix the search is exhaustive.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, runtime_checkable

import torch

from vlfw.errors import ConfigError

Cache = Any  # None, or any nesting of tuples / lists / dicts of tensors with leading dim N


@runtime_checkable
class GenerativeModel(Protocol):
    """What `generate` calls. N is the number of rows being decoded (samples x beams).

    generation_context(batch): per-sample tensors with leading dim B (e.g. encoded image states
        and their mask, the cross-attention keys and values), computed once per batch. The
        search expands them for the beams (repeat_interleave on dim 0) and drops the rows of
        finished samples; the model reads them in every step.
    generation_step(input_ids, context, cache): input_ids (N, 1) is the last token of every row
        (bos on the first step), context has leading dim N, cache is None on the first step and
        otherwise what the previous step returned, reordered by the search (index_select on dim 0
        of every tensor in it). Returns (logits (N, V) for the next token, the new cache).
    task_infos: dataset name -> vlfw.tasks.TaskInfo (BaseModel has it); gives the default
        bos / eos / pad ids (TextInfo.cls_id / sep_id / pad_id) of the batch's dataset.
    """

    task_infos: Mapping[str, Any]

    def generation_context(self, batch: Any) -> dict[str, torch.Tensor]: ...

    def generation_step(self, input_ids: torch.Tensor, context: dict[str, torch.Tensor],
                        cache: Cache) -> tuple[torch.Tensor, Cache]: ...


def select_rows(cache: Cache, index: torch.Tensor) -> Cache:
    """`cache` with every tensor in it replaced by tensor.index_select(0, index)."""
    if cache is None:
        return None
    if isinstance(cache, torch.Tensor):
        return cache.index_select(0, index)
    if isinstance(cache, dict):
        return {key: select_rows(value, index) for key, value in cache.items()}
    if isinstance(cache, (tuple, list)):
        return type(cache)(select_rows(value, index) for value in cache)
    raise TypeError(f"a generation cache may hold only tensors in tuples, lists and dicts, got {type(cache).__name__}")


def special_ids(model: Any, batch: Any, bos_id: int | None, eos_id: int | None,
                pad_id: int | None) -> tuple[int, int, int]:
    """bos / eos / pad: the given ones, else the batch dataset's TextInfo cls_id / sep_id / pad_id."""
    if bos_id is not None and eos_id is not None and pad_id is not None:
        return int(bos_id), int(eos_id), int(pad_id)
    name = getattr(batch, "dataset_name", None)
    info = (getattr(model, "task_infos", None) or {}).get(name)
    text = getattr(info, "text", None)
    if text is None:
        raise ConfigError(f"generate: dataset {name!r} has no TaskInfo with text ids in the model's task_infos; "
                          f"give bos_id, eos_id and pad_id")
    return (int(text.cls_id if bos_id is None else bos_id), int(text.sep_id if eos_id is None else eos_id),
            int(text.pad_id if pad_id is None else pad_id))


def _batch_size(batch: Any, context: Mapping[str, torch.Tensor]) -> int:
    sizes = {name: int(value.shape[0]) for name, value in context.items()}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"generation_context gave tensors with different leading dims: {sizes}")
    if sizes:
        return next(iter(sizes.values()))
    return int(batch.batch_size)


def _device(model: Any, context: Mapping[str, torch.Tensor]) -> torch.device:
    for value in context.values():
        return value.device
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def _log_probs(logits: torch.Tensor, rows: int, eos_id: int, block_eos: bool) -> torch.Tensor:
    if logits.dim() != 2 or logits.shape[0] != rows:
        raise ValueError(f"generation_step must return logits of shape (N, V) = ({rows}, V), got {tuple(logits.shape)}")
    log_probs = logits.float().log_softmax(dim=-1)
    if block_eos:
        log_probs[:, eos_id] = float("-inf")
    return log_probs


def _check(max_length: int, num_beams: int, min_length: int) -> None:
    if max_length < 1:
        raise ConfigError(f"generation.max_length must be at least 1, got {max_length}")
    if num_beams < 1:
        raise ConfigError(f"generation.num_beams must be at least 1, got {num_beams}")
    if min_length < 0:
        raise ConfigError(f"generation.min_length must be at least 0, got {min_length}")


@torch.no_grad()
def generate(model: GenerativeModel, batch: Any, max_length: int = 30, num_beams: int = 1,
             length_penalty: float = 1.0, min_length: int = 1, bos_id: int | None = None,
             eos_id: int | None = None, pad_id: int | None = None) -> torch.Tensor:
    """Token ids (B, T), T <= 1 + max_length: bos, the generated tokens, eos, then pad_id.

    max_length: tokens generated after bos (eos included). min_length: eos is blocked until this
    many tokens have been generated (1: no empty caption). num_beams 1 is greedy decoding; more
    is beam search scored as in the module docstring. The model is used in whatever mode it is
    in (call model.eval() first).
    """
    missing = [name for name in ("generation_context", "generation_step") if not callable(getattr(model, name, None))]
    if missing:
        raise ConfigError(f"model {type(model).__name__} cannot generate: it does not implement "
                          f"{' and '.join(missing)} (the vlfw.generation.GenerativeModel interface, docs/generation.md)")
    max_length, num_beams, min_length = int(max_length), int(num_beams), int(min_length)
    _check(max_length, num_beams, min_length)
    bos, eos, pad = special_ids(model, batch, bos_id, eos_id, pad_id)
    context = dict(model.generation_context(batch))
    size = _batch_size(batch, context)
    device = _device(model, context)
    if num_beams == 1:
        tokens = _greedy(model, context, size, device, max_length, min_length, bos, eos, pad)
    else:
        tokens = _beam_search(model, context, size, device, max_length, num_beams, float(length_penalty),
                              min_length, bos, eos, pad)
    starts = torch.full((size, 1), bos, dtype=torch.long, device=device)
    tokens = torch.cat([starts, tokens], dim=1)
    # trim the columns that are padding in every row
    real = (tokens != pad).any(dim=0).nonzero()
    return tokens[:, : int(real.max()) + 1] if len(real) else tokens[:, :1]


def _greedy(model, context, size, device, max_length, min_length, bos, eos, pad) -> torch.Tensor:
    """(B, max_length): the argmax token at every step until eos, pad after it."""
    tokens = torch.full((size, max_length), pad, dtype=torch.long, device=device)
    active = torch.arange(size, device=device)  # the samples still generating
    last = torch.full((size, 1), bos, dtype=torch.long, device=device)
    cache: Cache = None
    for step in range(max_length):
        logits, cache = model.generation_step(last, context, cache)
        chosen = _log_probs(logits, len(active), eos, step < min_length).argmax(dim=-1)
        tokens[active, step] = chosen
        running = chosen != eos
        if not bool(running.all()):
            if not bool(running.any()):
                break
            keep = running.nonzero().squeeze(1)
            active, chosen = active[keep], chosen[keep]
            context = {name: value.index_select(0, keep) for name, value in context.items()}
            cache = select_rows(cache, keep)
        last = chosen[:, None]
    return tokens


def _beam_search(model, context, size, device, max_length, num_beams, length_penalty, min_length,
                 bos, eos, pad) -> torch.Tensor:
    """(B, max_length): the best finished hypothesis of every sample, padded."""
    beams = num_beams
    minus_inf = float("-inf")
    best_score = torch.full((size,), minus_inf, device=device)
    best_tokens = torch.full((size, max_length), pad, dtype=torch.long, device=device)
    # the samples still searching, and per active sample its running beams
    active = torch.arange(size, device=device)
    context = {name: value.repeat_interleave(beams, dim=0) for name, value in context.items()}
    scores = torch.full((size, beams), minus_inf, device=device)
    scores[:, 0] = 0.0  # one real beam to start with: the others would repeat it
    sequences = torch.empty((size * beams, 0), dtype=torch.long, device=device)
    last = torch.full((size * beams, 1), bos, dtype=torch.long, device=device)
    cache: Cache = None

    def offer(candidate: torch.Tensor, candidate_tokens: torch.Tensor) -> None:
        """Keep, per active sample, a finished candidate (A,) / (A, max_length) that beats its best."""
        better = candidate > best_score[active]
        if bool(better.any()):
            rows = active[better]
            best_score[rows] = candidate[better]
            best_tokens[rows] = candidate_tokens[better]

    for step in range(max_length):
        length = step + 1  # of the hypotheses this step makes
        num_active = len(active)
        logits, cache = model.generation_step(last, context, cache)
        log_probs = _log_probs(logits, num_active * beams, eos, step < min_length)
        vocab = log_probs.shape[1]
        totals = scores.view(-1, 1) + log_probs  # (A*K, V) sums of log-probabilities

        # finished candidates: every running beam followed by eos
        if step >= min_length:
            finished = (totals[:, eos] / length ** length_penalty).view(num_active, beams)
            value, beam = finished.max(dim=1)
            rows = torch.arange(num_active, device=device) * beams + beam
            ended = torch.full((num_active, max_length), pad, dtype=torch.long, device=device)
            ended[:, :step] = sequences[rows]
            ended[:, step] = eos
            offer(value, ended)

        # running beams: the best extensions by any other token
        totals[:, eos] = minus_inf
        scores, flat = totals.view(num_active, beams * vocab).topk(beams, dim=1)
        parents = (torch.arange(num_active, device=device)[:, None] * beams + flat // vocab).view(-1)
        chosen = (flat % vocab).view(-1)
        sequences = torch.cat([sequences[parents], chosen[:, None]], dim=1)

        if length == max_length:  # the running beams end here, without eos
            value, beam = (scores / max_length ** length_penalty).max(dim=1)
            rows = torch.arange(num_active, device=device) * beams + beam
            offer(value, sequences[rows])
            break

        # a sample is done when no running beam can beat its best finished hypothesis: future
        # log-probabilities are <= 0, so a sum s <= 0 can reach at best s / max_length**p (p > 0)
        # or s / (length + 1)**p (p <= 0)
        reach = max_length if length_penalty > 0 else length + 1
        bound = scores.max(dim=1).values / reach ** length_penalty
        searching = ~(best_score[active] >= bound)
        if not bool(searching.all()):
            if not bool(searching.any()):
                break
            keep = searching.nonzero().squeeze(1)
            rows = (keep[:, None] * beams + torch.arange(beams, device=device)).view(-1)
            active, scores = active[keep], scores[keep]
            context = {name: value.index_select(0, rows) for name, value in context.items()}
            parents, chosen, sequences = parents[rows], chosen[rows], sequences[rows]
        cache = select_rows(cache, parents)
        last = chosen[:, None]
    return best_tokens
