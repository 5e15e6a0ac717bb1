"""The shared search (vlfw.generation) against brute force and hand-written greedy decoding."""

import itertools

import pytest
import torch

from vlfw.data.batch import Batch
from vlfw.errors import ConfigError
from vlfw.generation import GenerativeModel, generate, select_rows
from vlfw.tasks import TaskInfo, TextInfo

PAD, BOS, EOS = 0, 1, 2
WORDS = (3, 4, 5)  # the tokens a toy model can generate besides eos
VOCAB = 6
TASK_INFOS = {"toy": TaskInfo(task="captioning", dataset="toy", visual="images",
                              text=TextInfo(vocab_size=VOCAB, pad_id=PAD, cls_id=BOS, sep_id=EOS))}


class PrefixModel:
    """Next-token logits that are a fixed function of (sample, whole prefix); pad and bos are
    impossible (-inf). The cache is the prefix itself, so a wrong cache reordering gives wrong
    logits."""

    def __init__(self, logits_of):
        self.logits_of = logits_of
        self.task_infos = TASK_INFOS
        self.steps = 0

    def generation_context(self, batch):
        return {"sample": batch.sample.clone()}

    def generation_step(self, input_ids, context, cache):
        assert input_ids.shape == (len(context["sample"]), 1)
        prefix = input_ids if cache is None else torch.cat([cache["prefix"][0], input_ids], dim=1)
        logits = torch.stack([self.logits_of(int(s), tuple(p.tolist())) for s, p in zip(context["sample"], prefix)])
        self.steps += 1
        return logits, {"prefix": [prefix]}


def random_logits(sample, prefix):
    """Deterministic pseudo-random logits of (sample, prefix)."""
    seed = hash((sample,) + prefix) % (2 ** 31)
    logits = 1.0 * torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed))
    logits[[PAD, BOS]] = float("-inf")
    return logits


def batch_of(*samples):
    return Batch(sample=torch.tensor(samples), dataset_name="toy")


def log_probs(logits_of, sample, prefix):
    return logits_of(sample, prefix).float().log_softmax(-1)


def score(logits_of, sample, tokens, length_penalty):
    """Sum of log-probabilities (fp32, token by token as the search adds them) / length ** penalty."""
    total = torch.zeros(())
    prefix = (BOS,)
    for token in tokens:
        total = total + log_probs(logits_of, sample, prefix)[token]
        prefix += (token,)
    return float(total / len(tokens) ** length_penalty)


def brute_force(logits_of, sample, max_length, length_penalty, min_length):
    """The best of every sequence the search may return: words then eos (eos not before
    min_length words), or max_length words without eos."""
    candidates = [tokens + (EOS,) for n in range(min_length, max_length)
                  for tokens in itertools.product(WORDS, repeat=n)]
    candidates += list(itertools.product(WORDS, repeat=max_length))
    scored = [(score(logits_of, sample, c, length_penalty), c) for c in candidates]
    best = max(s for s, _ in scored)
    winners = [c for s, c in scored if s == best]
    assert len(winners) == 1, "ties make the test ambiguous: change the toy"
    return winners[0], best


def row(tokens, width):
    return [BOS] + list(tokens) + [PAD] * (width - 1 - len(tokens))


def greedy_by_hand(logits_of, sample, max_length, min_length):
    prefix = [BOS]
    for step in range(max_length):
        scores = log_probs(logits_of, sample, tuple(prefix))
        if step < min_length:
            scores[EOS] = float("-inf")
        prefix.append(int(scores.argmax()))
        if prefix[-1] == EOS:
            break
    return prefix[1:]


def test_toy_model_follows_the_protocol():
    assert isinstance(PrefixModel(random_logits), GenerativeModel)


@pytest.mark.parametrize("length_penalty", [-0.5, 0.0, 0.6, 1.0, 2.0])
@pytest.mark.parametrize("min_length", [0, 1, 3])
def test_wide_beam_finds_the_brute_force_best(length_penalty, min_length):
    max_length = 5
    wide = len(WORDS) ** (max_length - 1)  # holds every prefix of max_length - 1 words
    model = PrefixModel(random_logits)
    samples = tuple(range(6))
    out = generate(model, batch_of(*samples), max_length=max_length, num_beams=wide,
                   length_penalty=length_penalty, min_length=min_length)
    expected = [brute_force(random_logits, s, max_length, length_penalty, min_length)[0] for s in samples]
    width = 1 + max(len(e) for e in expected)
    assert out.tolist() == [row(e, width) for e in expected]


def test_a_beam_of_two_misses_the_best_on_this_toy():
    """So that the wide beam agreeing with brute force above is not a property of the toy."""
    misses = 0
    for length_penalty, min_length in itertools.product((0.0, 1.0, 2.0), (1, 3)):
        out = generate(PrefixModel(random_logits), batch_of(*range(6)), max_length=5, num_beams=2,
                       length_penalty=length_penalty, min_length=min_length)
        for sample in range(6):
            best = brute_force(random_logits, sample, 5, length_penalty, min_length)[0]
            misses += [t for t in out[sample, 1:].tolist() if t != PAD] != list(best)
    assert misses >= 3


def test_min_length_beyond_max_length_never_ends_with_eos():
    out = generate(PrefixModel(random_logits), batch_of(0, 1), max_length=3, num_beams=4, min_length=5)
    assert out.shape == (2, 4) and not (out == EOS).any()
    out = generate(PrefixModel(random_logits), batch_of(0, 1), max_length=3, num_beams=1, min_length=5)
    assert out.shape == (2, 4) and not (out == EOS).any()


@pytest.mark.parametrize("min_length", [0, 1, 2])
def test_greedy_is_the_hand_written_greedy_decode(min_length):
    samples = tuple(range(6))
    out = generate(PrefixModel(random_logits), batch_of(*samples), max_length=6, num_beams=1, min_length=min_length)
    expected = [greedy_by_hand(random_logits, s, 6, min_length) for s in samples]
    width = 1 + max(len(e) for e in expected)
    assert out.shape == (len(samples), width)
    assert out.tolist() == [row(e, width) for e in expected]


def trap_logits(sample, prefix):
    """After bos: a 0.6, b 0.4. After a: eos 0.34, a 0.33, b 0.33. After b: eos 0.9."""
    a, b = WORDS[0], WORDS[1]
    table = {(BOS,): {a: 0.6, b: 0.4}, (BOS, a): {EOS: 0.34, a: 0.33, b: 0.33}, (BOS, b): {EOS: 0.9, a: 0.1}}
    probs = table.get(prefix, {EOS: 1.0})
    logits = torch.full((VOCAB,), float("-inf"))
    for token, p in probs.items():
        logits[token] = torch.tensor(p).log()
    return logits


def test_a_narrow_beam_beats_greedy_where_greedy_is_trapped():
    a, b = WORDS[0], WORDS[1]
    greedy = generate(PrefixModel(trap_logits), batch_of(0), max_length=3, num_beams=1)
    beam = generate(PrefixModel(trap_logits), batch_of(0), max_length=3, num_beams=2)
    # greedy: log 0.6 + log 0.34 = -1.59; the beam keeps b: log 0.4 + log 0.9 = -1.02
    assert greedy.tolist() == [[BOS, a, EOS]]
    assert beam.tolist() == [[BOS, b, EOS]]
    assert score(trap_logits, 0, (b, EOS), 1.0) > score(trap_logits, 0, (a, EOS), 1.0)


def test_eos_ends_a_row_and_pad_follows():
    out = generate(PrefixModel(random_logits), batch_of(*range(8)), max_length=6, num_beams=3, pad_id=9)
    assert (out[:, 0] == BOS).all()
    for tokens in out.tolist():
        if EOS in tokens:
            end = tokens.index(EOS)
            assert end >= 2  # min_length 1: never an empty caption
            assert all(t == 9 for t in tokens[end + 1:])
        else:
            assert len(tokens) == 7 and 9 not in tokens  # ran to max_length
    # the width is the longest row: no column is padding in every row
    assert (out != 9).any(dim=0).all()


def test_explicit_ids_override_the_task_info():
    out = generate(PrefixModel(random_logits), Batch(sample=torch.tensor([0]), dataset_name="other"), max_length=4,
                   bos_id=4, eos_id=EOS, pad_id=PAD)
    assert out[0, 0] == 4
    with pytest.raises(Exception, match="bos_id, eos_id and pad_id"):
        generate(PrefixModel(random_logits), Batch(sample=torch.tensor([0]), dataset_name="other"))


@pytest.mark.parametrize("num_beams", [1, 2, 5])
def test_batch_rows_are_independent(num_beams):
    samples = (3, 7, 11, 12)
    together = generate(PrefixModel(random_logits), batch_of(*samples), max_length=6, num_beams=num_beams,
                        length_penalty=0.7)
    alone = [generate(PrefixModel(random_logits), batch_of(s), max_length=6, num_beams=num_beams,
                      length_penalty=0.7)[0].tolist() for s in samples]
    width = together.shape[1]
    assert together.tolist() == [a + [PAD] * (width - len(a)) for a in alone]


def test_finished_samples_stop_early():
    # every sample ends after one word with certainty: the search stops after two steps
    certain = lambda s, p: trap_logits(s, (BOS, WORDS[1])) if len(p) > 1 else trap_logits(s, p)  # noqa: E731
    model = PrefixModel(lambda s, p: torch.where(torch.arange(VOCAB) == EOS, 0.0, float("-inf"))
                        if len(p) > 1 else trap_logits(s, p))
    out = generate(model, batch_of(0, 1), max_length=10, num_beams=3)
    assert out.tolist() == [[BOS, WORDS[0], EOS]] * 2 and model.steps == 2
    greedy = PrefixModel(certain)
    generate(greedy, batch_of(0, 1), max_length=10, num_beams=1)
    assert greedy.steps == 2


def test_options_and_models_that_cannot_generate_are_one_line_errors():
    with pytest.raises(ConfigError, match="generation_context and generation_step"):
        generate(object(), batch_of(0))
    with pytest.raises(ConfigError, match="num_beams"):
        generate(PrefixModel(random_logits), batch_of(0), num_beams=0)
    with pytest.raises(ConfigError, match="max_length"):
        generate(PrefixModel(random_logits), batch_of(0), max_length=0)


def test_select_rows_reorders_nested_caches():
    cache = {"a": (torch.arange(3), [torch.arange(6).view(3, 2)]), "b": None}
    picked = select_rows(cache, torch.tensor([2, 2, 0]))
    assert picked["a"][0].tolist() == [2, 2, 0] and picked["a"][1][0].tolist() == [[4, 5], [4, 5], [0, 1]]
    assert picked["b"] is None and isinstance(picked["a"], tuple) and isinstance(picked["a"][1], list)
    with pytest.raises(TypeError, match="only tensors"):
        select_rows({"x": 3}, torch.tensor([0]))
