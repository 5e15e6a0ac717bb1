"""Helpers for test suites, the core's and plugins' alike."""

from __future__ import annotations

import os
import tempfile
from typing import Any


def use_private_cache(prefix: str = "vlfw-test-cache-") -> str:
    """Point VLFW_CACHE at a fresh temporary directory (unless already set), so tests never read
    or write ~/.cache/vlfw, and keep Hugging Face libraries offline. Returns the cache dir."""
    os.environ.setdefault("VLFW_CACHE", tempfile.mkdtemp(prefix=prefix))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    return os.environ["VLFW_CACHE"]


def shapes_root(size: str = "tiny", seed: int = 0) -> str:
    """The Shapes world of `size`, generated into the cache on first use."""
    from vlfw.world import ensure_world

    return ensure_world(size, seed=seed)


def shapes_builder(name: str, size: str = "tiny", seed: int = 0, **overrides: Any):
    """The dataset builder `name` reading the Shapes world (prepared first), with its defaults
    plus `overrides`."""
    from omegaconf import OmegaConf

    from vlfw.config import component_config
    from vlfw.datasets import prepare_sources
    from vlfw.registry import DATASETS

    builder_class = DATASETS.get(name)
    given = OmegaConf.merge(OmegaConf.create({"source": "shapes", "shapes": {"size": size, "seed": seed}}),
                            OmegaConf.create(overrides))
    config = component_config(builder_class, given, path=f"dataset_config.{name}")
    prepare_sources({"datasets": [name], "dataset_config": {name: config}})  # builders never generate
    return builder_class(config, name)


# Words of Shapes-like captions and questions: a small corpus to train a tokenizer offline.
_SHAPES_WORDS = {
    "colors": ["red", "green", "blue", "yellow", "purple", "orange", "gray", "white", "black", "cyan"],
    "shapes": ["circle", "square", "triangle", "star", "diamond", "cross", "circles", "squares", "triangles"],
    "sizes": ["small", "large", "big", "tiny"],
    "relations": ["left of", "right of", "above", "below", "next to", "near"],
    "numbers": ["one", "two", "three", "four", "five", "2", "3"],
    "questions": ["what color is the", "how many", "is there a", "what shape is the", "where is the"],
    "subjects": ["person", "dog", "man", "woman", "box", "image", "picture"],
    "verbs": ["is", "are", "walking", "doing", "holding", "sits", "shows", "contains"],
}


def shapes_sentences(count: int = 400, seed: int = 0) -> list[str]:
    """`count` short Shapes-like sentences and questions (drawn from a local generator)."""
    import random

    rng = random.Random(seed)
    w = _SHAPES_WORDS
    out = []
    for _ in range(count):
        thing = f"{rng.choice(w['sizes'])} {rng.choice(w['colors'])} {rng.choice(w['shapes'])}"
        other = f"{rng.choice(w['colors'])} {rng.choice(w['shapes'])}"
        form = rng.randrange(4)
        if form == 0:
            text = f"a {thing} {rng.choice(w['relations'])} the {other}."
        elif form == 1:
            text = f"{rng.choice(w['questions'])} {other} {rng.choice(w['relations'])} the {thing}?"
        elif form == 2:
            text = f"{rng.choice(w['numbers'])} {other}s and a {thing}, {rng.choice(w['verbs'])} here."
        else:
            text = f"the {rng.choice(w['subjects'])} {rng.choice(w['verbs'])} a {thing} ."
        out.append(text[0].upper() + text[1:] if rng.random() < 0.3 else text)
    return out


def roberta_style_tokenizer(directory: str, vocab_size: int = 600) -> str:
    """Train a RoBERTa-style byte-level BPE tokenizer offline on Shapes-like sentences and save it
    as a transformers tokenizer directory; returns the directory.

    Layout `<s> a </s></s> b </s>`; special tokens <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4; no
    token types. Deterministic (the same files for the same arguments)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(shapes_sentences(), trainer)
    backend.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                          add_prefix_space=False)
    for position, token in enumerate(specials):
        assert backend.token_to_id(token) == position, (token, backend.token_to_id(token))
    tokenizer = RobertaTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                     cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    os.makedirs(directory, exist_ok=True)
    tokenizer.save_pretrained(directory)
    return str(directory)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a test's process group)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def bert_text_info():
    """The TextInfo of the default `bert_tokenizer` (the bundled uncased WordPiece vocabulary)."""
    from vlfw.tasks import TextInfo

    return TextInfo(vocab_size=30522, pad_id=0, cls_id=101, sep_id=102, mask_id=103, unk_id=100,
                    processor={"type": "bert_tokenizer", "params": {}})


def task_info(task: str, dataset: str = "", text: Any = "bert", **fields: Any):
    """A vlfw.tasks.TaskInfo for tests: `text="bert"` (default) gives the bundled tokenizer's ids,
    None no text; tuples are accepted as lists for `answers` / `labels`."""
    from vlfw.tasks import TaskInfo

    for key in ("answers", "labels", "detector_class_names"):
        if fields.get(key) is not None:
            fields[key] = tuple(fields[key])
    return TaskInfo(task=task, dataset=dataset, text=bert_text_info() if text == "bert" else text, **fields)
