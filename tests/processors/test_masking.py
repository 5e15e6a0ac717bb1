import torch

from vlfw.processors.masking import WholeWordMasking, mask_regions, whole_word_mask
from vlfw.processors.text import BertTokenizerProcessor

SPECIAL = {0, 100, 101, 102, 103}


def _example():
    # [CLS] w0 w1 w1 w2 w2 w2 w3 [SEP]
    ids = torch.tensor([101, 2000, 2001, 2002, 2003, 2004, 2005, 2006, 102])
    words = [None, 0, 1, 1, 2, 2, 2, 3, None]
    return ids, words


def test_whole_words_are_masked_together_and_specials_never():
    ids, words = _example()
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        masked, labels = whole_word_mask(ids, words, 30522, 103, 0.3, g, SPECIAL)
        chosen = labels != -100
        assert chosen.any()
        assert not chosen[0] and not chosen[-1]
        assert torch.equal(labels[chosen], ids[chosen])
        assert torch.equal(masked[~chosen], ids[~chosen])
        for word in range(4):
            positions = [i for i, w in enumerate(words) if w == word]
            assert len(set(chosen[positions].tolist())) == 1
        assert not any(int(t) in (0, 100, 101, 102) for t in masked[chosen])


def test_replacement_proportions():
    ids = torch.arange(1000, 3000)
    words = list(range(2000))
    g = torch.Generator().manual_seed(0)
    masked, labels = whole_word_mask(ids, words, 30522, 103, 0.5, g, SPECIAL)
    chosen = labels != -100
    share = chosen.float().mean().item()
    assert 0.45 < share < 0.55
    n = chosen.sum().item()
    as_mask = (masked[chosen] == 103).sum().item() / n
    unchanged = (masked[chosen] == ids[chosen]).sum().item() / n
    assert 0.75 < as_mask < 0.85
    assert 0.07 < unchanged < 0.13


def test_deterministic_given_generator_and_at_least_one_word():
    ids, words = _example()
    a = whole_word_mask(ids, words, 30522, 103, 0.0, torch.Generator().manual_seed(5), SPECIAL)
    b = whole_word_mask(ids, words, 30522, 103, 0.0, torch.Generator().manual_seed(5), SPECIAL)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert (a[1] != -100).sum() >= 1


def test_no_words_no_mask():
    ids = torch.tensor([101, 102])
    masked, labels = whole_word_mask(ids, [None, None], 30522, 103)
    assert torch.equal(masked, ids) and (labels == -100).all()


def test_mask_regions():
    g = torch.Generator().manual_seed(0)
    m = mask_regions(10000, 0.15, g)
    assert m.dtype == torch.bool and m.shape == (10000,)
    assert 0.13 < m.float().mean().item() < 0.17
    assert mask_regions(0).numel() == 0


def test_processor_wrapper_uses_tokenizer_ids():
    tokenizer = BertTokenizerProcessor(max_length=20)
    masking = WholeWordMasking(tokenizer=tokenizer, probability=0.5)
    encoded = tokenizer("a man riding a horse on the beach")
    out = masking(encoded, generator=torch.Generator().manual_seed(1))
    assert set(out) >= {"input_ids", "token_type_ids", "word_ids", "mlm_labels"}
    assert out["mlm_labels"][0] == -100 and out["mlm_labels"][-1] == -100
    assert (out["mlm_labels"] != -100).any()


def test_probability_zero_turns_the_processors_off():
    from vlfw.processors.masking import RegionMasking
    from vlfw.registry import PROCESSORS

    tokenizer = BertTokenizerProcessor(max_length=20)
    encoded = tokenizer("a man riding a horse")
    off = PROCESSORS.get("whole_word_masking")(probability=0.0, tokenizer=tokenizer)
    assert not off.enabled and off(encoded, torch.Generator().manual_seed(0)) is encoded
    regions = PROCESSORS.get("region_masking")
    assert regions is RegionMasking and not regions().enabled  # default probability 0
    on = regions(probability=0.5)
    assert torch.equal(on(40, torch.Generator().manual_seed(3)), mask_regions(40, 0.5, torch.Generator().manual_seed(3)))
    import pytest

    with pytest.raises(ValueError, match="probability"):
        regions(probability=1.5)
